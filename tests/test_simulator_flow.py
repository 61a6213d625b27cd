"""The simulator end to end with raw HTTP: login, search for 32UMA's cells, download, verify."""

import hashlib
import io
import zipfile

import requests

# 32UMA from the official KML (lon/lat), the guide's six 90 m cells N49-N50 x E007-E009
UMA = "POLYGON((7.5880 49.5564,9.1377 49.5564,9.1377 50.5522,7.5880 50.5522,7.5880 49.5564))"


def login(sim, user="demo@example.com", password="demo"):
    reply = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": user, "password": password}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_login_search_download_verify(sim):
    token = login(sim)["access_token"]
    query = ("Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' "
             "and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-90-DGED/2024_1') and "
             f"OData.CSC.Intersects(area=geography'SRID=4326;{UMA}')")
    reply = requests.get(f"{sim.catalogue_url}/Products",
                         params={"$filter": query, "$expand": "Attributes", "$top": "1000"}, timeout=30)
    assert reply.status_code == 200, reply.text
    products = reply.json()["value"]
    grid = sorted(next(a["Value"] for a in p["Attributes"] if a["Name"] == "gridId") for p in products)
    # the default duplicate fraction may give a cell two products; the set is what matters here
    assert sorted(set(grid)) == ["N49_E007", "N49_E008", "N49_E009", "N50_E007", "N50_E008", "N50_E009"]

    product = products[0]
    body = requests.get(f"{sim.download_url}/Products({product['Id']})/$value",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert body.status_code == 200
    assert int(body.headers["Content-Length"]) == product["ContentLength"] == len(body.content)
    assert body.headers["Content-Disposition"] == f"attachment; filename={product['Name']}.zip"
    md5 = next(c["Value"] for c in product["Checksum"] if c["Algorithm"] == "MD5")
    assert hashlib.md5(body.content).hexdigest() == md5
    names = zipfile.ZipFile(io.BytesIO(body.content)).namelist()
    cell = next(a["Value"] for a in product["Attributes"] if a["Name"] == "gridId")
    lat, lon = cell.split("_")
    dem = f"Copernicus_DSM_30_{lat}_00_{lon}_00_DEM.tif"
    assert [n for n in names if n.endswith(dem) and "/PREVIEW/" not in n]

    downloads = [r for r in sim.request_log() if r.server == "download"]
    assert [(r.status, r.user, r.bytes_sent) for r in downloads] == [
        (200, "demo@example.com", product["ContentLength"])]
