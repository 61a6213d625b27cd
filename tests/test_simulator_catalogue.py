"""The simulator's OData catalogue, with raw HTTP: filter grammar, options, paging, records, errors."""

import re
import uuid
from datetime import datetime
from urllib.parse import quote

import pytest
import requests

UMA = "POLYGON((7.5880 49.5564,9.1377 49.5564,9.1377 50.5522,7.5880 50.5522,7.5880 49.5564))"
UMA_CELLS = ["N49_E007", "N49_E008", "N49_E009", "N50_E007", "N50_E008", "N50_E009"]
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def attr(name, value, kind="String"):
    return (f"Attributes/OData.CSC.{kind}Attribute/any(att:att/Name eq '{name}' and "
            f"att/OData.CSC.{kind}Attribute/Value eq '{value}')")


def area(wkt):
    return f"OData.CSC.Intersects(area=geography'SRID=4326;{wkt}')"


def search(sim, filter_=None, **options):
    params = {"$filter": filter_} if filter_ is not None else {}
    params.update({f"${k}": str(v) for k, v in options.items()})
    return requests.get(f"{sim.catalogue_url}/Products", params=params, timeout=30)


LIGHT = ("Id,Name,OriginDate,PublicationDate,ModificationDate,S3Path,ContentDate,Footprint")
"""Every key but ContentLength and Checksum, which make the simulator build each listed zip."""


def products(sim, filter_, **options):
    options.setdefault("select", LIGHT)
    reply = search(sim, filter_, top=1000, **options)
    assert reply.status_code == 200, reply.text
    return reply.json()["value"]


def grid_of(product):
    lon, lat = (int(float(v)) for v in product["Footprint"].split("((")[1].split(",")[0].split())
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


@pytest.fixture
def nodup(make_sim):
    return make_sim(duplicate_cells=())


# --- spatial ------------------------------------------------------------------------------------------
def test_tile_query_finds_its_six_cells_in_both_collections(nodup):
    ccm = products(nodup, f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')} "
                          f"and {area(UMA)}", expand="Attributes")
    assert sorted(next(a["Value"] for a in p["Attributes"] if a["Name"] == "gridId") for p in ccm) == UMA_CELLS
    cop = products(nodup, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')} and {area(UMA)}")
    assert sorted(grid_of(p) for p in cop) == UMA_CELLS


def test_polygon_on_degree_lines_also_intersects_the_neighbours(nodup):
    found = products(nodup, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')} and "
                            f"{area('POLYGON((7 50,8 50,8 51,7 51,7 50))')}")
    assert sorted(grid_of(p) for p in found) == [
        "N49_E006", "N49_E007", "N49_E008", "N50_E006", "N50_E007", "N50_E008",
        "N51_E006", "N51_E007", "N51_E008"]


def test_point_and_multipolygon(nodup):
    point = products(nodup, f"Collection/Name eq 'COP-DEM' and {area('POINT(7.5 50.5)')}")
    assert sorted(p["Name"][9:15] for p in point) == ["DGE_30", "DGE_90", "DTE_30", "DTE_90"]
    assert {grid_of(p) for p in point} == {"N50_E007"}
    multi = products(nodup, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DTE_30')} and " + area(
        "MULTIPOLYGON(((7.2 50.2,7.4 50.2,7.4 50.4,7.2 50.2)),((9.2 49.2,9.4 49.2,9.4 49.4,9.2 49.2)))"))
    assert sorted(grid_of(p) for p in multi) == ["N49_E009", "N50_E007"]


def test_open_sea_has_no_product(nodup):
    assert products(nodup, area("POLYGON((-40.5 30.2,-40.2 30.2,-40.2 30.6,-40.5 30.6,-40.5 30.2))")) == []


def test_antimeridian_cells_on_both_sides(nodup):
    east = products(nodup, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')} and "
                           f"{area('POLYGON((179.5 -16.8,180 -16.8,180 -16.2,179.5 -16.2,179.5 -16.8))')}")
    west = products(nodup, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')} and "
                           f"{area('POLYGON((-180 -16.8,-179.5 -16.8,-179.5 -16.2,-180 -16.2,-180 -16.8))')}")
    assert [grid_of(p) for p in east] == ["S17_E179"]
    assert [grid_of(p) for p in west] == ["S17_W180"]
    assert west[0]["Footprint"] == "geography'SRID=4326;POLYGON ((-180 -17, -179 -17, -179 -16, -180 -16, -180 -17))'"


def test_cells_that_exist_at_90m_only(make_sim, shared_data):
    sim = make_sim(cells_dir=shared_data, duplicate_cells=())
    found = products(sim, f"Collection/Name eq 'COP-DEM' and {area('POINT(45.5 38.5)')}")
    assert sorted(p["Name"][9:15] for p in found) == ["DGE_90", "DTE_90"]


# --- collections, attributes, records ---------------------------------------------------------------------
def test_ccm_has_every_delivery_and_its_attributes(nodup):
    found = products(nodup, f"Collection/Name eq 'CCM' and {attr('gridId', 'N50_E007')} and "
                            f"{attr('productType', 'SAR_DGE_90_A407')}", expand="Attributes")
    datasets = sorted(next(a["Value"] for a in p["Attributes"] if a["Name"] == "dataset") for p in found)
    assert datasets == [f"COP-DEM_GLO-90-DGED/{d}" for d in (
        "2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")]
    attributes = {a["Name"]: a for a in found[0]["Attributes"]}
    assert set(attributes) >= {"productType", "dataset", "datasetFull", "gridId", "eopIdentifier"}
    assert attributes["datasetFull"]["Value"] == "COP-DEM_GLO-90-DGED"
    assert attributes["gridId"]["Value"] == "N50_E007"
    assert attributes["productType"] == {"@odata.type": "#OData.CSC.StringAttribute", "Name": "productType",
                                         "Value": "SAR_DGE_90_A407", "ValueType": "String"}
    assert all(p["S3Path"].startswith("/eodata/CCM/COP-DEM_GLO-90-DGED/SAR_DGE_90_A407/") for p in found)


def test_ccm_records_as_recorded(nodup, shared_data):  # S26_E112: a cell of the real lists only
    found = products(nodup, f"Collection/Name eq 'CCM' and {attr('gridId', 'S26_E112')} and "
                            f"{attr('productType', 'SAR_DGE_90_A407')}", expand="Attributes",
                     orderby="PublicationDate asc")
    assert len(found) == 9
    hashes = set()
    for product in found:
        values = {a["Name"]: a["Value"] for a in product["Attributes"]}
        name = re.fullmatch(r"DEM1_SAR_DGE_90_(\d{8}T\d{6})_\d{8}T\d{6}_ADS_000000_([A-Za-z0-9]{4})_([0-9a-f]{8})"
                            r"\.DEM", product["Name"])
        assert name, product["Name"]
        hashes.add(name.group(3))
        assert values["eopIdentifier"] == f"urn:eop:DLR:CDEM90:Copernicus_DSM_30_S26_00_E112_00:V{name.group(2)}"
        assert values["authority"] == "Airbus DE"
        assert values["sensorType"] == "DEM" and values["platformShortName"] == "DEM1"
        assert values["gridId"] == "S26_E112" and values["datasetFull"] == "COP-DEM_GLO-90-DGED"
        assert values["resolutionClass"] and values["orderReference"]
        start = datetime.strptime(name.group(1), "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        assert product["ContentDate"]["Start"] == start  # the acquisition start in the name
        assert "2010" <= start[:4] <= "2015"
    assert len(hashes) == 9  # another hash in each delivery
    names = {a["Name"] for a in found[0]["Attributes"]}
    listed = requests.get(f"{nodup.catalogue_url}/Attributes(CCM)", timeout=30).json()
    assert names == {a["Name"] for a in listed} == {
        "authority", "dataset", "datasetFull", "eopIdentifier", "gridId", "orderReference", "platformShortName",
        "productType", "resolutionClass", "sensorType"}


def test_content_date_end_is_start_plus_one_second(nodup):
    found = products(nodup, f"Collection/Name eq 'CCM' and {area(UMA)}", select="Name,ContentDate")
    assert found
    for product in found:
        start = datetime.fromisoformat(product["ContentDate"]["Start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(product["ContentDate"]["End"].replace("Z", "+00:00"))
        assert (end - start).total_seconds() == 1
        assert start.strftime("%Y%m%dT%H%M%S") == product["Name"].split("_")[4]


def test_eea10_products_are_in_ccm_too(nodup):
    collection_only = products(nodup, f"Collection/Name eq 'CCM' and {area('POINT(8.5 49.5)')}", expand="Attributes")
    types = sorted(next(a["Value"] for a in p["Attributes"] if a["Name"] == "productType") for p in collection_only)
    assert types.count("SAR_DGE_10_9319") == 1 and types.count("SAR_INS_10_52C5") == 1
    assert len(types) == 9 * 4 + 2
    glo = products(nodup, f"{attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')} and {area('POINT(8.5 49.5)')}")
    assert len(glo) == 1
    assert products(nodup, f"Collection/Name eq 'CCM' and {attr('productType', 'SAR_DGE_10_9319')} and "
                           f"{area('POINT(-70.5 -30.5)')}") == []  # over Europe only


def test_a_seeded_few_ccm_products_have_no_grid_id(make_sim):
    sim = make_sim(duplicate_cells=(), missing_grid_id=0.3)
    query = f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')} and " + area(
        "POLYGON((5.5 45.5,15.5 45.5,15.5 51.5,5.5 51.5,5.5 45.5))")
    found = products(sim, query, expand="Attributes")
    def without(records):
        return [p for p in records if "gridId" not in {a["Name"] for a in p["Attributes"]}]

    lacking = without(found)
    assert 0 < len(lacking) < len(found)
    assert {p["Id"] for p in lacking} == {p["Id"] for p in without(products(sim, query, expand="Attributes"))}
    missing = lacking[0]
    assert products(sim, f"{attr('gridId', grid_of(missing))} and {attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')}",
                    select="Id") == []  # a search by gridId cannot find it: only its footprint can
    eop = next(a["Value"] for a in missing["Attributes"] if a["Name"] == "eopIdentifier")
    lat, lon = grid_of(missing).split("_")
    assert f"_{lat}_00_{lon}_00:" in eop
    default = products(make_sim(duplicate_cells=()), query, expand="Attributes")
    assert all("gridId" in {a["Name"] for a in p["Attributes"]} for p in default)  # 1 in 10,000 by default


@pytest.mark.parametrize(("product_type", "ccm_type"), [
    ("DGE_30", "SAR_DGE_30_A4AD"), ("DGE_90", "SAR_DGE_90_A407"),
    ("DTE_30", "SAR_DTE_30_615C"), ("DTE_90", "SAR_DTE_90_61F6")])
def test_product_types_of_both_collections(nodup, product_type, ccm_type):
    cop = products(nodup, f"{attr('productType', product_type)} and {area('POINT(7.5 50.5)')}", expand="Attributes")
    assert len(cop) == 1
    attributes = {a["Name"]: a["Value"] for a in cop[0]["Attributes"]}
    assert attributes["productType"] == product_type
    assert attributes["spatialResolution"] == product_type[-2:]
    assert "authority" in attributes
    res, model = product_type[-2:], "DGED" if product_type.startswith("DGE") else "DTED"
    assert cop[0]["S3Path"] == f"/eodata/auxdata/CopDEM/COP-DEM_GLO-{res}-{model}/{cop[0]['Name']}"
    ccm = products(nodup, f"{attr('productType', ccm_type)} and {area('POINT(7.5 50.5)')}")
    assert len(ccm) == 9  # one per delivery
    assert all(p["Name"].startswith(f"DEM1_SAR_{product_type}_") for p in ccm + cop)


def test_record_has_every_key_in_the_real_formats(nodup):
    record = products(nodup, f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-30-DGED/2024_1')} "
                             f"and {attr('gridId', 'N50_E007')}", select="*")[0]
    assert list(record) == ["@odata.mediaContentType", "Id", "Name", "ContentType", "ContentLength", "OriginDate",
                            "PublicationDate", "ModificationDate", "Online", "EvictionDate", "S3Path", "Checksum",
                            "ContentDate", "Footprint", "GeoFootprint"]
    assert uuid.UUID(record["Id"]).version == 5
    assert re.match(r"^DEM1_SAR_DGE_30_\d{8}T\d{6}_\d{8}T\d{6}_ADS_000000_[A-Za-z0-9]{4}_[0-9a-f]{8}\.DEM$",
                    record["Name"])
    for key in ("OriginDate", "PublicationDate", "ModificationDate"):
        assert STAMP.match(record[key]), record[key]
    assert STAMP.match(record["ContentDate"]["Start"]) and STAMP.match(record["ContentDate"]["End"])
    assert record["EvictionDate"] == "9999-12-31T23:59:59.999999Z"
    assert record["Online"] is True
    assert record["ContentLength"] > 0
    assert [c["Algorithm"] for c in record["Checksum"]] == ["MD5", "BLAKE3"]
    assert re.match(r"^[0-9a-f]{32}$", record["Checksum"][0]["Value"])
    assert re.match(r"^[0-9a-f]{64}$", record["Checksum"][1]["Value"])
    assert record["Footprint"] == "geography'SRID=4326;POLYGON ((7 50, 8 50, 8 51, 7 51, 7 50))'"
    assert record["GeoFootprint"] == {"type": "Polygon",
                                      "coordinates": [[[7, 50], [8, 50], [8, 51], [7, 51], [7, 50]]]}


def test_ids_and_names_are_stable_across_runs(make_sim):
    query = f"Collection/Name eq 'CCM' and {attr('gridId', 'N49_E008')} and contains(Name, '_90_')"
    first = [(p["Id"], p["Name"], p["Checksum"][0]["Value"])
             for p in products(make_sim(), query, select="*", orderby="PublicationDate asc")]
    second = [(p["Id"], p["Name"], p["Checksum"][0]["Value"])
              for p in products(make_sim(), query, select="*", orderby="PublicationDate asc")]
    assert first == second
    assert len({i for i, _, _ in first}) == len(first) == 18  # two kinds, nine deliveries


def test_duplicated_cells_carry_two_products_per_delivery(make_sim):
    sim = make_sim(duplicate_cells=["N50_E007"])
    query = f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')} and {area(UMA)}"
    found = products(sim, query)
    cells = sorted(grid_of(p) for p in found)
    assert cells == sorted([*UMA_CELLS, "N50_E007"])
    twins = [p for p in found if grid_of(p) == "N50_E007"]
    assert twins[0]["Id"] != twins[1]["Id"] and twins[0]["Name"] != twins[1]["Name"]
    assert twins[0]["ModificationDate"] != twins[1]["ModificationDate"]


def test_duplicate_fraction_is_deterministic(make_sim):
    query = f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-90-DGED/2024_1')} and " + area(
        "POLYGON((5.5 45.5,15.5 45.5,15.5 51.5,5.5 51.5,5.5 45.5))")
    counts = []
    for _ in range(2):
        found = products(make_sim(duplicate_cells=0.2, seed=3), query, select="Id,Footprint")
        cells = [grid_of(p) for p in found]
        counts.append(sorted({c for c in cells if cells.count(c) == 2}))
    assert counts[0] == counts[1]
    assert counts[0]  # with 20% of ~70 cells, some are doubled


# --- grammar ------------------------------------------------------------------------------------------------
def test_or_not_and_parentheses(nodup):
    found = products(nodup, f"Collection/Name eq 'COP-DEM' and ({attr('productType', 'DGE_90')} or "
                            f"{attr('productType', 'DTE_90')}) and {area('POINT(7.5 50.5)')}")
    assert sorted(p["Name"][9:15] for p in found) == ["DGE_90", "DTE_90"]
    negated = products(nodup, f"Collection/Name eq 'COP-DEM' and not contains(Name,'DGE') and "
                              f"{area('POINT(7.5 50.5)')}")
    assert sorted(p["Name"][9:15] for p in negated) == ["DTE_30", "DTE_90"]


def test_name_functions_and_name_eq_without_a_spatial_clause(nodup):
    base = f"Collection/Name eq 'COP-DEM' and {area('POINT(7.5 50.5)')}"
    assert [p["Name"][9:15] for p in products(nodup, f"{base} and startswith(Name,'DEM1_SAR_DTE_30')")] == ["DTE_30"]
    one = products(nodup, f"{base} and endswith(Name,'.DEM') and contains(Name, 'DGE_90')")
    assert len(one) == 1
    exact = products(nodup, f"Name eq '{one[0]['Name']}'")
    assert [p["Id"] for p in exact] == [one[0]["Id"]]


def test_content_date_comparisons_split_the_set(nodup):
    base = f"Collection/Name eq 'CCM' and {area(UMA)}"
    everything = {p["Id"]: p for p in products(nodup, base)}
    pivot = "2012-06-01T00:00:00.000Z"
    before = products(nodup, f"{base} and ContentDate/Start lt {pivot}")
    after = products(nodup, f"{base} and ContentDate/Start ge {pivot}")
    assert before and after
    assert {p["Id"] for p in before} | {p["Id"] for p in after} == set(everything)
    assert all(p["ContentDate"]["Start"] < "2012-06-01" for p in before)
    assert all(p["ContentDate"]["Start"] >= "2012-06-01" for p in after)
    window = products(nodup, f"{base} and ContentDate/Start gt 2011-01-01T00:00:00Z and "
                             f"ContentDate/End lt 2014-01-01T00:00:00.000Z and PublicationDate gt 2020-01-01T00:00:00Z")
    assert all("2011-01-01" < p["ContentDate"]["Start"] and p["ContentDate"]["End"] < "2014-01-01" for p in window)


def test_url_encoded_or_raw_and_odd_whitespace_give_the_same_answer(nodup):
    filter_ = f"Collection/Name eq 'COP-DEM' and {area(UMA)}"
    encoded = requests.get(f"{nodup.catalogue_url}/Products?$filter={quote(filter_)}&$top=100&$select=Id",
                           timeout=30)
    plus = requests.get(f"{nodup.catalogue_url}/Products?%24filter={quote(filter_).replace('%20', '+')}&%24top=100"
                        "&%24select=Id", timeout=30)
    raw = requests.get(f"{nodup.catalogue_url}/Products?$filter={filter_}&$top=100&$select=Id", timeout=30)
    spaced = search(nodup, "  Collection/Name   eq 'COP-DEM'  and  " + area(UMA.replace(",", " , ")) + " ", top=100,
                    select="Id")
    answers = [sorted(p["Id"] for p in r.json()["value"]) for r in (encoded, plus, raw, spaced)]
    assert len(answers[0]) == 24  # four kinds, six cells
    assert answers[1] == answers[0] and answers[2] == answers[0] and answers[3] == answers[0]


def test_in_lists_and_linestrings(nodup):
    found = products(nodup, f"Collection/Name in ('COP-DEM', 'NOPE') and "
                            f"{area('LINESTRING(7.5 49.5,9.5 49.5)')} and {attr('productType', 'DGE_30')}")
    assert sorted(grid_of(p) for p in found) == ["N49_E007", "N49_E008", "N49_E009"]


def test_built_in_cells_when_the_real_lists_are_absent(make_sim, tmp_path, monkeypatch):
    import simulator.cells

    monkeypatch.setattr(simulator.cells, "DEFAULT_CELLS_DIR", tmp_path / "nowhere")
    sim = make_sim(duplicate_cells=())
    uma = products(sim, f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')} and {area(UMA)}")
    assert sorted(grid_of(p) for p in uma) == UMA_CELLS
    fiji = products(sim, f"{attr('productType', 'DGE_90')} and "
                         f"{area('POLYGON((179.5 -16.8,180 -16.8,180 -16.2,179.5 -16.2,179.5 -16.8))')}")
    assert [grid_of(p) for p in fiji] == ["S17_E179"]
    assert products(sim, f"Collection/Name eq 'COP-DEM' and {area('POINT(45.5 38.5)')}") == []


def test_string_function_on_an_attribute_value(nodup):
    found = products(nodup, "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' and "
                            "contains(att/OData.CSC.StringAttribute/Value, '90-DTED/2021')) and " + area(UMA))
    assert len(found) == 12  # 2021_1 and 2021_2


# --- options and paging ---------------------------------------------------------------------------------------
def test_paging_follows_next_links_to_the_end(nodup):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    reply = search(nodup, query, top=7, count="true", orderby="ContentDate/Start asc", select=LIGHT)
    body = reply.json()
    total = body["@odata.count"]
    assert total == 6 * (9 * 4 + 2)  # six cells: nine deliveries of four kinds, and EEA-10 twice
    seen = [p["Id"] for p in body["value"]]
    pages = 1
    while "@odata.nextLink" in body:
        assert body["@odata.nextLink"].startswith(f"{nodup.catalogue_url}/Products?")
        body = requests.get(body["@odata.nextLink"], timeout=30).json()
        assert len(body["value"]) <= 7
        seen += [p["Id"] for p in body["value"]]
        pages += 1
    assert pages == -(-total // 7)
    assert len(seen) == len(set(seen)) == total
    assert set(seen) == {p["Id"] for p in products(nodup, query)}


def test_default_top_is_20_and_skip_skips(nodup):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    first = search(nodup, query, select=LIGHT).json()
    assert len(first["value"]) == 20
    skipped = search(nodup, query, skip=20, top=5, orderby="PublicationDate desc", select=LIGHT).json()
    everything = products(nodup, query, orderby="PublicationDate desc")
    assert [p["Id"] for p in skipped["value"]] == [p["Id"] for p in everything[20:25]]


def test_orderby_select_expand_count(nodup):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    ordered = products(nodup, query, orderby="ContentDate/Start desc")
    starts = [p["ContentDate"]["Start"] for p in ordered]
    assert starts == sorted(starts, reverse=True)
    published = products(nodup, query, orderby="PublicationDate asc")
    assert [p["PublicationDate"] for p in published] == sorted(p["PublicationDate"] for p in published)
    selected = products(nodup, query, select="Id,Name")
    assert set(selected[0]) == {"@odata.mediaContentType", "Id", "Name"}
    assert "Attributes" not in products(nodup, query)[0]
    assert "ContentLength" not in selected[0]
    both = requests.get(f"{nodup.catalogue_url}/Products?$filter={quote(query)}&$top=1&$select={LIGHT}"
                        "&$expand=Attributes&$expand=Assets", timeout=30).json()["value"][0]
    assert "Attributes" in both and both["Assets"] == []
    counted = search(nodup, query, top=1, count="True").json()
    assert counted["@odata.count"] == 228
    assert "@odata.count" not in search(nodup, query, top=1).json()


def page_through(sim, query, top, **options):
    """Every Id an ordinary client collects by following ``@odata.nextLink`` to the end."""
    options.setdefault("select", LIGHT)
    body = search(sim, query, top=top, **options).json()
    seen = [p["Id"] for p in body["value"]]
    while "@odata.nextLink" in body:
        body = requests.get(body["@odata.nextLink"], timeout=30).json()
        seen += [p["Id"] for p in body["value"]]
    return seen


def test_without_orderby_each_request_has_its_own_order_so_paging_repeats_and_loses(nodup):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    every = {p["Id"] for p in products(nodup, query, orderby="ModificationDate asc")}
    unordered = page_through(nodup, query, 10)
    assert len(unordered) == len(every)  # as many items as matches ...
    assert len(set(unordered)) < len(every)  # ... but some twice, so others never
    assert set(unordered) < every
    twice = [search(nodup, query, top=10, select="Id").json()["value"] for _ in range(2)]
    assert [p["Id"] for p in twice[0]] != [p["Id"] for p in twice[1]]
    ordered = page_through(nodup, query, 10, orderby="ContentDate/End desc")
    assert len(ordered) == len(set(ordered)) == len(every)
    assert set(ordered) == every


def test_without_orderby_and_without_an_area_pages_are_unstable_too(nodup):
    query = f"Collection/Name eq 'COP-DEM' and {attr('productType', 'DGE_90')}"
    pages = [[p["Id"] for p in search(nodup, query, top=50, skip=50, select="Id").json()["value"]]
             for _ in range(3)]
    assert all(len(page) == 50 for page in pages)
    assert len({tuple(page) for page in pages}) > 1


@pytest.mark.parametrize("field", ["ContentDate/Start", "ContentDate/End", "PublicationDate", "ModificationDate"])
def test_orderby_documented_fields_with_id_as_tie_break(nodup, field):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    for direction in ("asc", "desc"):
        found = products(nodup, query, orderby=f"{field} {direction}", expand="Attributes")
        value = (lambda p: p[field.split("/")[0]][field.split("/")[1]]) if "/" in field else (lambda p: p[field])
        assert [value(p) for p in found] == sorted((value(p) for p in found), reverse=direction == "desc")
        # products of a cell share their acquisition dates: ties, broken by Id ascending
        ties = [p["Id"] for p in found if value(p) == value(found[0])]
        assert ties == sorted(ties)
    repeated = [page_through(nodup, query, 25, orderby=f"{field} desc") for _ in range(2)]
    assert repeated[0] == repeated[1]


@pytest.mark.parametrize("orderby", ["Name asc", "OriginDate desc", "Id asc", "ContentDate/Start up"])
def test_orderby_on_other_fields_is_400(nodup, orderby):
    reply = search(nodup, "Collection/Name eq 'CCM'", orderby=orderby)
    assert reply.status_code == 400
    assert reply.json()["detail"]


def test_odata_context_and_fully_encoded_absolute_next_link(nodup):
    query = f"Collection/Name eq 'CCM' and {area(UMA)}"
    expanded = search(nodup, query, top=5, expand="Attributes", orderby="ContentDate/Start asc", select="Id").json()
    assert expanded["@odata.context"] == "$metadata#Products(Attributes())"
    assert search(nodup, query, top=5, select="Id").json()["@odata.context"] == "$metadata#Products"
    link = expanded["@odata.nextLink"]
    assert link.startswith(f"{nodup.catalogue_url}/Products?")
    tail = link.split("?", 1)[1]
    assert "%24filter=Collection%2FName+eq+%27CCM%27+and+OData.CSC.Intersects" in tail
    assert "$" not in tail and " " not in tail and "'" not in tail
    assert "%24skip=5" in tail and "%24orderby=ContentDate%2FStart+asc" in tail and "%24select=Id" in tail


def test_catalogue_latency_delays_every_search(make_sim):
    sim = make_sim(duplicate_cells=(), catalogue_latency=0.4)
    assert search(sim, f"Collection/Name eq 'CCM' and {area(UMA)}", top=1, select="Id").status_code == 200
    (record,) = [r for r in sim.request_log() if r.path.endswith("/Products")]
    assert record.finished - record.started >= 0.4


def test_search_without_spatial_clause_pages_lazily(nodup):
    body = search(nodup, f"Collection/Name eq 'CCM' and {attr('dataset', 'COP-DEM_GLO-30-DTED/2022_1')}",
                  top=3).json()
    assert len(body["value"]) == 3
    assert "@odata.nextLink" in body


# --- one product, redirect -----------------------------------------------------------------------------------
def test_one_product_and_unknown_product(nodup):
    product = products(nodup, f"Collection/Name eq 'COP-DEM' and {area('POINT(7.5 50.5)')} and "
                              "contains(Name, '_90_')", select="*")[0]
    one = requests.get(f"{nodup.catalogue_url}/Products({product['Id']})", timeout=30)
    assert one.status_code == 200
    assert one.json()["Name"] == product["Name"]
    assert one.json()["Checksum"] == product["Checksum"]
    missing = requests.get(f"{nodup.catalogue_url}/Products({uuid.uuid4()})", timeout=30)
    assert missing.status_code == 404
    assert "detail" in missing.json()


def test_catalogue_redirects_value_to_the_download_host(nodup):
    product = products(nodup, f"Collection/Name eq 'COP-DEM' and {area('POINT(7.5 50.5)')}")[0]
    path = f"/Products({product['Id']})/$value"
    reply = requests.get(nodup.catalogue_url + path, allow_redirects=False, timeout=30)
    assert reply.status_code == 301
    assert reply.headers["Location"] == nodup.download_url + path
    # following it, requests drops the token on the host change: the download host says so, as CDSE does
    token = requests.post(nodup.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                                 "username": "demo@example.com", "password": "demo"},
                          timeout=10).json()["access_token"]
    followed = requests.get(nodup.catalogue_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert followed.status_code == 401
    assert followed.json()["code"] == "DAT-ZIP-604"


# --- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filter_", [
    "Collection/Name eq 'CCM' and",
    "Collection/Name eq 'CCM' or or Name eq 'x'",
    "(Collection/Name eq 'CCM'",
    "Collection/Name eq CCM",
    "Collection/Name eq 'CCM",
    "Collection/Foo eq 'CCM'",
    "Footprint eq 'x'",
    "ContentLength gt 5",
    "tolower(Name) eq 'x'",
    "OData.CSC.Within(area=geography'SRID=4326;POINT(7 50)')",
    "Collection/Name eq 'CCM' and ContentDate/Start gt 'yesterday'",
    "Attributes/OData.CSC.FooAttribute/any(att:att/Name eq 'x')",
    "Attributes/OData.CSC.StringAttribute/any(att:att/Size eq 'x')",
    area("POLYGON((7 50,8 50,8 51,7 51))"),
    area("POLYGON((7 50,8 51,8 50,7 51,7 50))"),
    area("POLYGON((50 7,51 7,51 8))"),
    area("POLYGON((7 95,8 95,8 96,7 95))"),
    "OData.CSC.Intersects(area=geography'SRID=3857;POINT(7 50)')",
    "OData.CSC.Intersects(area=geography'POINT(7 50)')",
    "OData.CSC.Intersects(area=geography'SRID=4326;CIRCLE(7 50)')",
    "",
    "Name eq 'a' ; drop",
])
def test_filters_it_does_not_understand_are_400_with_detail(nodup, filter_):
    reply = search(nodup, filter_)
    assert reply.status_code == 400, reply.text
    assert isinstance(reply.json()["detail"], str) and reply.json()["detail"]


@pytest.mark.parametrize(("options", "status"), [
    ({"top": "1001"}, 422), ({"skip": "10001"}, 422), ({"top": "-1"}, 400), ({"top": "ten"}, 400),
    ({"skip": "x"}, 400), ({"count": "maybe"}, 400), ({"orderby": "Size asc"}, 400),
    ({"orderby": "PublicationDate sideways"}, 400), ({"expand": "Everything"}, 400), ({"select": "Size"}, 400),
    ({"search": "dem"}, 400), ({"format": "xml"}, 400),
])
def test_bad_options(nodup, options, status):
    reply = search(nodup, "Collection/Name eq 'CCM'", **options)
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"]


def test_limits_themselves_are_allowed(nodup):
    assert search(nodup, f"Collection/Name eq 'CCM' and {area(UMA)}", top=1000, skip=10000).status_code == 200


def test_a_next_link_past_the_skip_limit_is_refused(nodup, shared_data):
    # shared_data: more than 10,000 matches need the real cell lists (skips without them)
    reply = search(nodup, "Collection/Name eq 'CCM'", top=1000, skip=10000, select="Id")
    link = reply.json()["@odata.nextLink"]
    assert link.endswith("skip=11000")
    assert requests.get(link, timeout=30).status_code == 422


def test_dates_in_records_parse(nodup):
    record = products(nodup, f"Collection/Name eq 'CCM' and {attr('gridId', 'S78_E166')}")[0]
    for key in ("OriginDate", "PublicationDate", "ModificationDate"):
        datetime.fromisoformat(record[key].replace("Z", "+00:00"))
