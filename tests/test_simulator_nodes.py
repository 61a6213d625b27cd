"""The simulator's Nodes API (single files of a product), with raw HTTP: listings, bytes, errors, quota, faults."""

import io
import threading
import zipfile

import pytest
import requests

from simulator import Faults, User
from tests.test_simulator_download import assert_zip_error

POINT = "OData.CSC.Intersects(area=geography'SRID=4326;POINT(8.5 49.5)')"
LISTING_KEYS = {"Id", "Name", "ContentLength", "ChildrenNumber", "Nodes"}


def token_for(sim, user="demo@example.com", password="demo"):
    reply = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": user, "password": password}, timeout=10)
    return reply.json()["access_token"]


def find(sim, collection, product_type):
    query = (f"Collection/Name eq '{collection}' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq "
             f"'productType' and att/OData.CSC.StringAttribute/Value eq '{product_type}') and {POINT}")
    found = requests.get(f"{sim.catalogue_url}/Products", params={"$filter": query, "$orderby": "PublicationDate desc"},
                         timeout=60).json()["value"]
    return found[0]


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def listing(url, token):
    reply = requests.get(url, headers=auth(token), timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"result"}
    for entry in body["result"]:
        assert set(entry) == LISTING_KEYS
        assert entry["Id"] == entry["Name"]
        assert set(entry["Nodes"]) == {"uri"}
    return body["result"]


def walk_to_dem(sim, product, token):
    """What a client does: list the root (never build its name), then follow the uris down to the DEM layer."""
    (root,) = listing(f"{sim.download_url}/Products({product['Id']})/Nodes", token)
    level = listing(root["Nodes"]["uri"], token)
    (cell,) = [e for e in level if e["Name"].startswith("Copernicus_DSM_")]
    dem_folder = next(e for e in listing(cell["Nodes"]["uri"], token) if e["Name"] == "DEM")
    (dem,) = listing(dem_folder["Nodes"]["uri"], token)
    return root, cell, dem


def zip_of(sim, product, token):
    reply = requests.get(f"{sim.download_url}/Products({product['Id']})/$value", headers=auth(token), timeout=60)
    assert reply.status_code == 200
    return zipfile.ZipFile(io.BytesIO(reply.content))


@pytest.mark.parametrize(("collection", "product_type", "suffix"), [
    ("CCM", "SAR_DGE_90_A407", "_DEM.tif"), ("COP-DEM", "DGE_90", "_DEM.tif"),
    ("CCM", "SAR_DTE_90_61F6", "_DEM.dt1"), ("COP-DEM", "DTE_30", "_DEM.dt2")])
def test_walk_to_the_dem_and_its_bytes_are_the_zip_members(sim, collection, product_type, suffix):
    product = find(sim, collection, product_type)
    token = token_for(sim)
    root, cell, dem = walk_to_dem(sim, product, token)
    stem = product["Name"][: -len(".DEM")]
    assert root["Name"] == (product["Name"] if collection == "COP-DEM" else stem)  # see simulator/nodes.py
    assert root["ContentLength"] == 0 and root["ChildrenNumber"] >= 2
    assert root["Nodes"]["uri"] == f"{sim.download_url}/Products({product['Id']})/Nodes({root['Name']})/Nodes"
    assert dem["Name"] == cell["Name"] + suffix and dem["ChildrenNumber"] == 0
    assert dem["Nodes"]["uri"] == (f"{sim.download_url}/Products({product['Id']})/Nodes({root['Name']})/"
                                   f"Nodes({cell['Name']})/Nodes(DEM)/Nodes({dem['Name']})/Nodes")
    value = requests.get(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=60)
    assert value.status_code == 200
    assert value.headers["Content-Length"] == str(dem["ContentLength"])
    member = zip_of(sim, product, token).read(f"{stem}/{cell['Name']}/DEM/{dem['Name']}")
    assert value.content == member and len(member) == dem["ContentLength"]
    assert len(member) < product["ContentLength"] or suffix != "_DEM.tif"


def test_every_level_lists_what_the_zip_holds(sim):
    product = find(sim, "CCM", "SAR_DGE_90_A407")
    token = token_for(sim)
    archive = zip_of(sim, product, token)
    stem = product["Name"][: -len(".DEM")]
    root, cell, _ = walk_to_dem(sim, product, token)
    top = listing(root["Nodes"]["uri"], token)
    assert {e["Name"] for e in top} == {n.split("/")[1] for n in archive.namelist()}
    files = {e["Name"]: e for e in top if e["ChildrenNumber"] == 0}
    for name, entry in files.items():
        assert entry["ContentLength"] == archive.getinfo(f"{stem}/{name}").file_size > 0
    folders = {e["Name"]: e for e in listing(cell["Nodes"]["uri"], token)}
    assert {"DEM", "AUXFILES", "INFO", "PREVIEW"} <= set(folders)
    assert folders["PREVIEW"]["ChildrenNumber"] == 8 and folders["PREVIEW"]["ContentLength"] == 0
    hem = next(e for e in listing(folders["AUXFILES"]["Nodes"]["uri"], token) if e["Name"].endswith("_HEM.tif"))
    assert hem["ContentLength"] == archive.getinfo(f"{stem}/{cell['Name']}/AUXFILES/{hem['Name']}").file_size
    assert listing(hem["Nodes"]["uri"], token) == []  # a file has no children


def test_quoted_names_and_bad_paths_are_dat_zip_104(sim):
    product = find(sim, "COP-DEM", "DGE_90")
    token = token_for(sim)
    base = f"{sim.download_url}/Products({product['Id']})"
    for path in (f"/Nodes('{product['Name']}')/Nodes", f"/Nodes(%27{product['Name']}%27)/Nodes",
                 "/Nodes()/Nodes", f"/Nodes({product['Name']})", "/Nodes/Nodes(x)"):
        assert_zip_error(requests.get(base + path, headers=auth(token), timeout=30), 400, "DAT-ZIP-104")
    assert_zip_error(requests.get(f"{base}/Nodes(nothing-here)/Nodes", headers=auth(token), timeout=30), 404,
                     "DAT-ZIP-404")
    root = listing(f"{base}/Nodes", token)[0]
    assert_zip_error(requests.get(root["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token),
                                  timeout=30), 404, "DAT-ZIP-404")  # a folder has no bytes
    assert_zip_error(requests.get(f"{sim.download_url}/Products(not-a-uuid)/Nodes", headers=auth(token),
                                  timeout=30), 422, "DAT-ZIP-111")


def test_token_rules_are_those_of_whole_products(make_sim):
    sim = make_sim(users=[User("demo@example.com", "demo"), User("plain@example.com", "p", ccm=False)])
    product = find(sim, "CCM", "SAR_DGE_90_A407")
    url = f"{sim.download_url}/Products({product['Id']})/Nodes"
    assert_zip_error(requests.get(url, timeout=30), 401, "DAT-ZIP-604")
    assert_zip_error(requests.get(url, headers=auth(token_for(sim, "plain@example.com", "p")), timeout=30), 403,
                     "DAT-ZIP-608")
    assert requests.get(url, headers=auth(token_for(sim)), timeout=30).status_code == 200


def test_nodes_can_be_turned_off(make_sim):
    sim = make_sim(nodes=False)
    product = find(sim, "CCM", "SAR_DGE_90_A407")
    token = token_for(sim)
    base = f"{sim.download_url}/Products({product['Id']})"
    assert requests.get(f"{base}/Nodes", headers=auth(token), timeout=30).status_code == 404
    assert requests.get(f"{base}/Nodes(x)/Nodes(y)/$value", headers=auth(token), timeout=30).status_code == 404
    assert requests.get(f"{base}/$value", headers=auth(token), timeout=30).status_code == 200  # zips still come


def test_nodes_latency_delays_every_nodes_request_only(make_sim):
    sim = make_sim(nodes_latency=0.4)
    product = find(sim, "COP-DEM", "DGE_90")
    token = token_for(sim)
    _, _, dem = walk_to_dem(sim, product, token)
    requests.get(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=30)
    requests.get(f"{sim.download_url}/Products({product['Id']})/$value", headers=auth(token), timeout=30)
    records = [r for r in sim.request_log() if r.server == "download"]
    nodes = [r for r in records if "/Nodes" in r.path]
    assert len(nodes) == 5 and all(r.status == 200 for r in nodes)
    assert all(r.finished - r.started >= 0.4 for r in nodes)
    (whole,) = [r for r in records if r.path.endswith(")/$value") and "/Nodes" not in r.path]
    assert whole.status == 200


@pytest.mark.parametrize("collection", ["CCM", "COP-DEM"])
def test_a_file_by_its_path_of_names_is_the_walk_s_file_each_request_late(make_sim, collection):
    """The form CDSE documents, ``Nodes(<root>)/Nodes(<cell>)/Nodes(DEM)/Nodes(<file>)/$value`` built from the
    names alone, serves what the walk finds; a name not in the tree is 404; the latency delays each request."""
    sim = make_sim(nodes_latency=0.2)
    product = find(sim, collection, "SAR_DGE_90_A407" if collection == "CCM" else "DGE_90")
    token = token_for(sim)
    root, cell, dem = walk_to_dem(sim, product, token)
    built = (f"{sim.download_url}/Products({product['Id']})/Nodes({root['Name']})/Nodes({cell['Name']})/Nodes(DEM)"
             f"/Nodes({dem['Name']})/$value")
    walked = requests.get(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=30)
    direct = requests.get(built, headers=auth(token), timeout=30)
    assert direct.status_code == 200 and direct.content == walked.content
    assert direct.headers["Content-Length"] == str(dem["ContentLength"])
    assert_zip_error(requests.get(built.replace("_DEM.", "_dem."), headers=auth(token), timeout=30), 404,
                     "DAT-ZIP-404")
    nodes = [r for r in sim.request_log() if r.server == "download" and "/Nodes" in r.path]
    assert len(nodes) == 7 and all(r.finished - r.started >= 0.2 for r in nodes)


def test_faults_hit_node_files_as_they_hit_zips(make_sim):
    sim = make_sim(faults=Faults(drop_first=1, error_first=1, storm_first=1, error_statuses=(503,)))
    product = find(sim, "COP-DEM", "DGE_90")
    token = token_for(sim)
    url = f"{sim.download_url}/Products({product['Id']})/Nodes"
    stormed = requests.get(url, headers=auth(token), timeout=30)
    assert_zip_error(stormed, 429, "DAT-ZIP-100")
    assert float(stormed.headers["Retry-After"]) > 0
    errored = requests.get(url, headers=auth(token), timeout=30)
    assert errored.status_code == 503 and errored.headers["Retry-After"]
    _, _, dem = walk_to_dem(sim, product, token)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=30)
    cut = [r for r in sim.request_log() if r.path.endswith("/$value")][-1]
    assert cut.fault == "drop" and 0 < cut.bytes_sent < dem["ContentLength"]
    whole = requests.get(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=30)
    assert len(whole.content) == dem["ContentLength"]
    assert [r.fault for r in sim.request_log() if r.server == "download"][:2] == ["storm429", "error503"]


def test_quota_and_bandwidth_apply_to_node_files(make_sim):
    sim = make_sim(bandwidth=20_000)
    product = find(sim, "COP-DEM", "DGE_90")
    token = token_for(sim)
    _, _, dem = walk_to_dem(sim, product, token)
    url = dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value"
    start = threading.Barrier(5)
    replies = []

    def fetch():
        start.wait()
        replies.append(requests.get(url, headers=auth(token), timeout=60))

    threads = [threading.Thread(target=fetch) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in replies) == [200, 200, 200, 200, 429]
    assert_zip_error(next(r for r in replies if r.status_code == 429), 429, "DAT-ZIP-100")
    done = [r for r in sim.request_log() if r.path.endswith("/$value") and r.status == 200]
    assert all(r.finished - r.started >= 0.9 * dem["ContentLength"] / 20_000 for r in done)
    assert all(r.bytes_sent == dem["ContentLength"] for r in done)


def test_cli_flags_for_nodes():
    from simulator.__main__ import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--no-nodes", "--nodes-latency", "0.3",
                                                          "--catalogue-latency", "0.5", "--missing-grid-id", "0.01"]))
    assert (config.nodes, config.nodes_latency, config.catalogue_latency, config.missing_grid_id) == (
        False, 0.3, 0.5, 0.01)
    default = config_from_args(build_parser().parse_args([]))
    assert default.nodes is True and default.nodes_latency == 0 and default.catalogue_latency == 0


def test_head_on_a_node_file(sim):
    product = find(sim, "COP-DEM", "DGE_90")
    token = token_for(sim)
    _, _, dem = walk_to_dem(sim, product, token)
    reply = requests.head(dem["Nodes"]["uri"][: -len("/Nodes")] + "/$value", headers=auth(token), timeout=30)
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["Content-Length"] == str(dem["ContentLength"])
