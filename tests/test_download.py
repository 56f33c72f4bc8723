"""Download helper: checksums, atomic placement, archives, on-request datasets — against a loopback server."""
import functools
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile

import pytest

from recbole_psrq.convert import download
from recbole_psrq.errors import ConfigError, DataFormatError


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (root folder, base url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _publish(root, url, data):
    path = root / download.urllib.parse.urlsplit(url).path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def _zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_verified_download_is_extracted_and_not_fetched_twice(server, tmp_path, monkeypatch, capsys):
    root, base = server
    md5 = _publish(root, download.HETREC.url, _zip({"artists.dat": "id\tname\turl\tpictureURL\n"}))
    monkeypatch.setattr(download, "HETREC", download.Remote(download.HETREC.url, md5=md5, extract=True))
    dest = tmp_path / "raw"
    assert download.main(["hetrec-lastfm", "--dest", str(dest), "--mirror", base, "--no-progress"]) == 0
    assert (dest / "artists.dat").read_text().startswith("id\tname")
    assert not list(dest.glob("*.part"))
    (root / download.urllib.parse.urlsplit(download.HETREC.url).path.lstrip("/")).unlink()  # server loses it
    download.download("hetrec-lastfm", str(dest), mirror=base, progress=False)  # present + checksum OK
    assert "sha256" in capsys.readouterr().out


def test_checksum_mismatch_keeps_nothing_and_names_both_hashes(server, tmp_path):
    root, base = server
    _publish(root, download.HETREC.url, b"not the published archive")
    dest = tmp_path / "raw"
    with pytest.raises(DataFormatError, match=r"md5 checksum mismatch \(expected 296d61afe4e8632b173fc2dd3be20ce2, got"):
        download.download("hetrec-lastfm", str(dest), mirror=base, progress=False)
    assert not any(dest.iterdir())  # neither the file nor a .part left behind


def test_archive_members_are_verified_against_published_md5(server, tmp_path):
    root, base = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = b"user_000001\t2009-05-04T23:08:57Z\t\tA\t\tB\n"
        info = tarfile.TarInfo("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    _publish(root, download.LASTFM_1K.url, buf.getvalue())
    with pytest.raises(DataFormatError, match="userid-profile.tsv is missing|does not match the published"):
        download.download("lastfm-1k", str(tmp_path / "raw"), mirror=base, progress=False)


def test_zenodo_record_files_checked_against_record_md5(server, tmp_path):
    root, base = server
    good = _publish(root, "/files/userid_trackid_count.tsv", b"user_id\ttrack_id\tcount\n")
    record = {"files": [{"key": "userid_trackid_count.tsv", "checksum": f"md5:{good}",
                         "links": {"self": "https://zenodo.org/files/userid_trackid_count.tsv"}}]}
    _publish(root, "/api/records/42", json.dumps(record).encode())
    files = download.download("music4all-onion", str(tmp_path / "raw"), zenodo_record=42, mirror=base,
                              progress=False)
    assert [os.path.basename(p) for p, _ in files] == ["userid_trackid_count.tsv"]
    # the InvenioRDM record shape (files.entries, links.content) works the same
    entry = {**record["files"][0], "checksum": "md5:" + "0" * 32,
             "links": {"content": "https://zenodo.org/files/userid_trackid_count.tsv", "self": "meta"}}
    record = {"files": {"entries": {entry["key"]: entry}}}
    _publish(root, "/api/records/43", json.dumps(record).encode())
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        download.download("music4all-onion", str(tmp_path / "raw2"), zenodo_record=43, mirror=base,
                          progress=False)
    with pytest.raises(ConfigError, match="--zenodo-record"):
        download.download("music4all-onion", str(tmp_path / "raw3"))


def test_amazon_has_no_published_checksum_so_sha256_is_reported(server, tmp_path, capsys):
    root, base = server
    payloads = {}
    for kind, prefix in (("review_categories", ""), ("meta_categories", "meta_")):
        url = f"{download.AMAZON_BASE}/{kind}/{prefix}Digital_Music.jsonl.gz"
        payloads[os.path.basename(url)] = f"{kind}\n".encode()
        _publish(root, url, payloads[os.path.basename(url)])
    assert download.main(["amazon2023", "--category", "Digital_Music", "--dest", str(tmp_path / "raw"),
                          "--mirror", base, "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name, data in payloads.items():
        assert f"{name}  sha256 {hashlib.sha256(data).hexdigest()}" in out


# The whole message per dataset: who shares it, how to ask, and what to run afterwards.
WHERE_TO_ASK = {
    "music4all": "Music4All is shared on request by its authors (Santana et al., IWSSIP 2020): fill in the "
                 "request form linked from the Music4All page of the authors' lab, then point "
                 "`python -m recbole_psrq.convert music4all --src` at the unpacked folder.",
    "lfm-1b": "LFM-1b is no longer downloadable from JKU's web site; it is shared on request by the "
              "Institute of Computational Perception, JKU Linz (Schedl, ICMR 2016) for non-commercial research.",
    "lfm-2b": "LFM-2b was withdrawn from public download by JKU Linz (licence terms); it is shared on request "
              "for non-commercial research. Music4All-Onion (public on Zenodo) carries part of it.",
    "mpd": "The Spotify Million Playlist Dataset requires an AIcrowd account and accepting its licence on the "
           "RecSys Challenge 2018 page; download it there and convert with "
           "`python -m recbole_psrq.convert mpd --src <folder of slices>`.",
}


@pytest.mark.parametrize("dataset", sorted(WHERE_TO_ASK))
def test_on_request_datasets_say_where_to_ask(dataset, capsys):
    assert download.main([dataset]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {dataset} has no public download. {WHERE_TO_ASK[dataset]}\n"
    assert captured.out == ""


def test_unknown_dataset_lists_the_known_ones(capsys):
    assert download.main(["spotify-full", "--dest", "x"]) == 2
    assert "hetrec-lastfm" in capsys.readouterr().err
