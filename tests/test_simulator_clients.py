"""The query strings third-party CDSE clients send, run raw against the simulator, answers checked.

Forms reproduced (not their code):
- ESA's reference tool v1.0 and v1.1 (../shared/docs/reference-tool.md): a URL string with the
  filter written raw, ``$top=100``, one download at a time with a fresh session and a Bearer header;
- CDSETool's OData search (``query.py``): ``$filter=<urllib quote(filter)>&$top=1000&$orderby=
  ContentDate/Start%20asc&$count=true``, following ``@odata.nextLink`` with ``$count=true`` cut out;
  its download: HEAD on the catalogue URL, follow the 301 by hand, then GET with the Bearer header;
  ``Attributes(<collection>)`` to describe a collection;
- eodag's ``cop_dataspace`` provider: ``$filter`` of ``and``-joined templates with the geometry as
  EWKT (``SRID=4326;POLYGON ((x y, ...))``), ``$top``/``$skip``, ``$expand=Attributes&$expand=Assets``,
  ``$count=True``, ``$orderby=ContentDate/Start asc``; login found through the OpenID configuration,
  the token given to the download as ``?token=`` on the catalogue's ``$value`` URL (301 followed).
"""

import hashlib
import re
from urllib.parse import quote

import pytest
import requests

from simulator import User

# 32UMA from the official KML, the guide's cells N49-N50 x E007-E009
UMA_RING = [(7.588086, 49.556488), (9.137770, 49.556488), (9.137770, 50.552211), (7.588086, 50.552211),
            (7.588086, 49.556488)]
UMA_CELLS = ["N49_E007", "N49_E008", "N49_E009", "N50_E007", "N50_E008", "N50_E009"]
# 01KAB crosses the antimeridian: the reference tool queries each side separately
KAB_EAST = [(179.3, -17.25), (180.0, -17.25), (180.0, -16.25), (179.3, -16.25), (179.3, -17.25)]
KAB_WEST = [(-180.0, -17.25), (-179.1, -17.25), (-179.1, -16.25), (-180.0, -16.25), (-180.0, -17.25)]


def ring(points, sep=","):
    return sep.join(f"{x} {y}" for x, y in points)


def grid_of(product):
    lon, lat = (int(float(v)) for v in product["Footprint"].split("((")[1].split(",")[0].split())
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def login(sim, user="demo@example.com", password="demo"):
    return requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                              "username": user, "password": password}, timeout=10).json()


@pytest.fixture
def sim(make_sim):
    return make_sim(duplicate_cells=(), users=[User("demo@example.com", "demo"),
                                               User("noccm@example.com", "n", ccm=False)])


# --- the reference tool -----------------------------------------------------------------------------------
def reference_query(sim, part, v11, model="DGED", resolution=90):
    if v11:
        clause = (f"Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq "
                  f"'dataset' and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-{resolution}-{model}/2024_1')")
    else:
        kind = f"{'DGE' if model == 'DGED' else 'DTE'}_{resolution}"
        clause = (f"Collection/Name eq 'COP-DEM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq "
                  f"'productType' and att/OData.CSC.StringAttribute/Value eq '{kind}')")
    url = (f"{sim.catalogue_url}/Products?$filter={clause} and OData.CSC.Intersects(area=geography"
           f"'SRID=4326;POLYGON(({ring(part, ', ')}))')&$top=100")
    reply = requests.get(url, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["value"]


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0-COP-DEM", "v1.1-CCM"])
def test_reference_tool_query_and_one_at_a_time_downloads(sim, v11):
    found = reference_query(sim, UMA_RING, v11)
    assert sorted(grid_of(p) for p in found) == UMA_CELLS
    token = login(sim)["access_token"]
    for product in found[:2]:
        with requests.Session() as fresh:  # a new session per file, as the tool does
            reply = fresh.get(f"{sim.download_url}/Products({product['Id']})/$value",
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert reply.status_code == 200
        assert hashlib.md5(reply.content).hexdigest() == product["Checksum"][0]["Value"]


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0-COP-DEM", "v1.1-CCM"])
def test_reference_tool_antimeridian_parts(sim, v11):
    east = reference_query(sim, KAB_EAST, v11)
    west = reference_query(sim, KAB_WEST, v11)
    assert sorted(grid_of(p) for p in east) == ["S17_E179", "S18_E179"]
    assert sorted(grid_of(p) for p in west) == ["S17_W180", "S18_W180"]


def test_reference_tool_dted_30(sim):
    found = reference_query(sim, UMA_RING, True, model="DTED", resolution=30)
    assert len(found) == 6
    assert all(p["Name"].startswith("DEM1_SAR_DTE_30_") for p in found)


def test_reference_tool_v11_account_without_ccm(sim):
    product = reference_query(sim, UMA_RING, True)[0]
    token = login(sim, "noccm@example.com", "n")["access_token"]
    reply = requests.get(f"{sim.download_url}/Products({product['Id']})/$value",
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert reply.status_code == 403
    assert reply.json()["code"] == "DAT-ZIP-608"


# --- CDSETool ---------------------------------------------------------------------------------------------------
def strip_count(url):
    url = re.sub(r"[&?](\$|%24)count=true", "", url, count=1)
    if "?" not in url and "&" in url:
        url = url.replace("&", "?", 1)
    return url


def test_cdsetool_search_pages_with_count(sim):
    filter_ = " and ".join([
        "Collection/Name eq 'CCM'",
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        "att/OData.CSC.StringAttribute/Value eq 'SAR_DGE_90_A407')",
        f"OData.CSC.Intersects(area=geography'SRID=4326;POLYGON(({ring(UMA_RING, ', ')}))')",
        "ContentDate/Start ge 2010-01-01T00:00:00.000Z",
    ])
    url = (f"{sim.catalogue_url}/Products?$filter={quote(filter_)}&$top=5&$orderby=ContentDate/Start%20asc"
           "&$count=true&$expand=Attributes")
    features, total = [], None
    while url:
        body = requests.get(url, timeout=30).json()
        features += body["value"]
        total = body.get("@odata.count", total)
        link = body.get("@odata.nextLink")
        url = strip_count(link) if link else None
    assert total == 54  # six cells, nine deliveries
    assert len(features) == len({p["Id"] for p in features}) == 54
    starts = [p["ContentDate"]["Start"] for p in features]
    assert starts == sorted(starts)
    datasets = {a["Value"] for p in features for a in p["Attributes"] if a["Name"] == "dataset"}
    assert datasets == {f"COP-DEM_GLO-90-DGED/{d}" for d in (
        "2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")}


def test_cdsetool_download_follows_the_redirect_by_hand(sim):
    product = reference_query(sim, UMA_RING, True)[0]
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {login(sim)['access_token']}"})
    url = f"{sim.catalogue_url}/Products({product['Id']})/$value"
    response = session.head(url, allow_redirects=False, timeout=30)
    while response.status_code in range(300, 400):
        url = response.headers["Location"]
        response = session.head(url, allow_redirects=False, timeout=30)
    assert url.startswith(sim.download_url)
    assert response.status_code == 200
    with session.get(url, stream=True, timeout=30) as reply:
        assert reply.status_code == 200
        length = int(reply.headers["Content-Length"])
        body = b"".join(reply.iter_content(chunk_size=1024 * 1024 * 5))
    assert len(body) == length == product["ContentLength"]


def test_cdsetool_describe_collection(sim):
    reply = requests.get(f"{sim.catalogue_url}/Attributes(CCM)", timeout=30)
    assert reply.status_code == 200
    assert {a["Name"] for a in reply.json()} >= {"dataset", "gridId", "productType"}
    assert requests.get(f"{sim.catalogue_url}/Attributes(NOPE)", timeout=30).status_code == 404


# --- eodag ------------------------------------------------------------------------------------------------------
def eodag_url(sim, filter_, limit, skip, orderby="&$orderby=ContentDate/Start asc"):
    safe = "[]$=&:%"
    search = f"$filter={quote(filter_, safe=safe)}"
    return (f"{sim.catalogue_url}/Products?{search}&$top={limit}&$skip={skip}&$expand=Attributes&$expand=Assets"
            f"&$count=True{orderby}")


@pytest.mark.parametrize("orderby", ["&$orderby=ContentDate/Start asc", "&$orderby=PublicationDate desc", ""],
                         ids=["start-asc", "publication-desc", "no-orderby"])
def test_eodag_paging_by_skip_with_and_without_orderby(sim, orderby, shared_data):  # > 80 cells: real lists
    """eodag pages with $skip; CDSE orders nothing unless asked, so only an ordered search is whole."""
    box = [(5.5, 44.5), (16.5, 44.5), (16.5, 54.5), (5.5, 54.5), (5.5, 44.5)]
    filter_ = (f"Collection/Name eq 'CCM' and OData.CSC.Intersects(area=geography'SRID=4326;POLYGON (("
               f"{ring(box, ', ')}))') and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' "
               "and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-90-DGED/2024_1')")
    seen, skip, total = [], 0, None
    while total is None or skip < total:
        body = requests.get(eodag_url(sim, filter_, 40, skip, orderby), timeout=60).json()
        total = body["@odata.count"]
        seen += [p["Id"] for p in body["value"]]
        skip += 40
    assert total > 80  # three pages at least
    assert len(seen) == total
    if orderby:
        assert len(set(seen)) == total  # every product exactly once
    else:
        assert len(set(seen)) < total  # some twice, so others lost


def test_eodag_search_and_pages(sim):
    ewkt = "SRID=4326;POLYGON ((" + ", ".join(f"{x} {y}" for x, y in UMA_RING) + "))"
    filter_ = " and ".join([
        "Collection/Name eq 'COP-DEM'",
        f"OData.CSC.Intersects(area=geography'{ewkt}')",
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        "att/OData.CSC.StringAttribute/Value eq 'DGE_90')",
    ])
    first = requests.get(eodag_url(sim, filter_, 4, 0), timeout=30)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["@odata.count"] == 6
    items = list(body["value"])
    assert all("Attributes" in p and "Assets" in p for p in items)
    link = body["@odata.nextLink"]
    assert re.search(r"(\$|%24)skip=4", link)
    second = requests.get(link, timeout=30).json()
    items += second["value"]
    assert "@odata.nextLink" not in second
    assert sorted(grid_of(p) for p in items) == UMA_CELLS
    assert all(p["Checksum"][0]["Algorithm"] == "MD5" for p in items)


def test_eodag_login_through_openid_configuration_and_token_in_query(sim):
    realm = sim.token_url.rsplit("/protocol/", 1)[0]
    config = requests.get(f"{realm}/.well-known/openid-configuration", timeout=10).json()
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    token = requests.post(config["token_endpoint"], data={"client_id": "cdse-public", "grant_type": "password",
                                                          "username": "demo@example.com", "password": "demo"},
                          timeout=10).json()["access_token"]
    keys = requests.get(config["jwks_uri"], timeout=10).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA"
    product = reference_query(sim, UMA_RING, False)[0]
    reply = requests.get(f"{sim.catalogue_url}/Products({product['Id']})/$value", params={"token": token},
                         timeout=30)
    assert reply.status_code == 200
    assert reply.url.startswith(sim.download_url)
    assert hashlib.md5(reply.content).hexdigest() == next(
        c["Value"] for c in product["Checksum"] if c["Algorithm"] == "MD5")
