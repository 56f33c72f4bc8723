"""Download the public music datasets that have a stable public URL, verifying checksums.

    python -m recbole_psrq.convert download <dataset> --dest RAW_DIR [--category Digital_Music] [--sha256 HEX]

Public downloads: ``hetrec-lastfm`` (GroupLens zip), ``lastfm-1k`` (MTG tarball), ``amazon2023``
(McAuley lab, per category), ``music4all-onion`` (Zenodo record: every file is checked against the MD5
that Zenodo publishes in the record). Datasets only available on request (``music4all``, ``lfm-1b``,
``lfm-2b``, ``mpd``) print where to ask and exit with code 2.

A file is written to ``<name>.part`` and only renamed into place once its checksum matched, so an
interrupted or corrupted download never looks complete; a file already present with the right checksum
is not fetched again. Where the publisher gives no checksum (Amazon 2023), the SHA-256 is printed so it
can be recorded with the results, and ``--sha256`` verifies against a value you trust.
The data stay under their publishers' licences: convert them locally, never commit or redistribute them.
"""
import argparse
import json
import os
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field

from recbole_psrq.errors import ConfigError, DataFormatError, PSRQError
from recbole_psrq.io import file_digest


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str = None              # checksum of the downloaded file, where one is published
    checksum_source: str = ""
    extract: bool = False
    # checksums of files inside the archive, where the publisher gives those instead
    member_md5: dict = field(default_factory=dict)


HETREC = Remote("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                md5="296d61afe4e8632b173fc2dd3be20ce2",
                checksum_source="as used by the DataRec library's HetRec loader (GroupLens publishes none)",
                extract=True)
LASTFM_1K = Remote("http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-1K.tar.gz", extract=True,
                   checksum_source="MD5s of the extracted files, from the dataset's own README",
                   member_md5={
                       "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv":
                           "64747b21563e3d2aa95751e0ddc46b68",
                       "lastfm-dataset-1K/userid-profile.tsv": "c53608b6b445db201098c1489ea497df"})
AMAZON_BASE = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw"
AMAZON_CATEGORIES = ("Digital_Music", "CDs_and_Vinyl")
ZENODO_API = "https://zenodo.org/api/records/"

ON_REQUEST = {
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
PUBLIC = ("hetrec-lastfm", "lastfm-1k", "amazon2023", "music4all-onion")


def mirrored(url, mirror):
    """``url`` with scheme and host replaced by ``mirror`` (a local mirror or a test server)."""
    if not mirror:
        return url
    return mirror.rstrip("/") + urllib.parse.urlsplit(url).path


def fetch(url, dest, md5=None, sha256=None, progress=True):
    """Download ``url`` to ``dest`` via ``dest.part``; verify; rename. Returns the file's SHA-256."""
    if os.path.isfile(dest) and (md5 or sha256):
        if (not md5 or file_digest(dest, "md5") == md5) and (not sha256 or file_digest(dest, "sha256") == sha256):
            if progress:
                print(f"{dest}: present, checksum OK (not downloaded again)", file=sys.stderr)
            return file_digest(dest, "sha256")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if progress and total:
                    print(f"\r{os.path.basename(dest)}: {done / total:6.1%}", end="", file=sys.stderr)
        if progress and total:
            print(file=sys.stderr)
    except OSError as e:
        if os.path.exists(part):
            os.unlink(part)
        raise DataFormatError(f"Could not download {url}: {e}. Check the network, or download it by hand "
                              f"into {os.path.dirname(os.path.abspath(dest))} and convert from there.") from e
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(part, algorithm)
            if got != expected.lower():
                os.unlink(part)
                raise DataFormatError(
                    f"{url}: {algorithm} checksum mismatch (expected {expected}, got {got}); the download is "
                    "corrupt or the file changed upstream. Nothing was kept; retry, or check the publisher's page.")
    os.replace(part, dest)
    return file_digest(dest, "sha256")


def extract(archive, dest_dir, member_md5=None):
    """Unpack a zip/tar archive into ``dest_dir`` (paths checked to stay inside) and verify member MD5s."""
    root = os.path.realpath(dest_dir)
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _check_members(archive, names, root)
            z.extractall(dest_dir)
    else:
        with tarfile.open(archive) as t:
            names = t.getnames()
            _check_members(archive, names, root)
            t.extractall(dest_dir, filter="data")
    for member, expected in (member_md5 or {}).items():
        path = os.path.join(dest_dir, member)
        if not os.path.isfile(path):
            raise DataFormatError(f"{archive}: expected member {member} is missing; the archive is not the "
                                  "published one.")
        got = file_digest(path, "md5")
        if got != expected:
            raise DataFormatError(f"{path}: md5 {got} does not match the published {expected}; the archive is "
                                  "corrupt or was changed. Delete it and download again.")
    return names


def _check_members(archive, names, root):
    for name in names:
        target = os.path.realpath(os.path.join(root, name))
        if target != root and not target.startswith(root + os.sep):
            raise DataFormatError(f"{archive}: member {name!r} would be written outside {root}; refusing.")


def download(dataset, dest, category=None, sha256=None, zenodo_record=None, mirror=None, progress=True):
    """Fetch ``dataset`` into ``dest``; returns a list of (path, sha256) of the downloaded files."""
    if dataset in ON_REQUEST:
        raise ConfigError(f"{dataset} has no public download. {ON_REQUEST[dataset]}")
    if dataset not in PUBLIC:
        raise ConfigError(f"unknown dataset '{dataset}'; public: {', '.join(PUBLIC)}; on request: "
                          f"{', '.join(ON_REQUEST)}.")
    done = []
    if dataset in ("hetrec-lastfm", "lastfm-1k"):
        remote = HETREC if dataset == "hetrec-lastfm" else LASTFM_1K
        path = os.path.join(dest, os.path.basename(remote.url))
        done.append((path, fetch(mirrored(remote.url, mirror), path, md5=remote.md5, sha256=sha256,
                                 progress=progress)))
        extract(path, dest, remote.member_md5)
    elif dataset == "amazon2023":
        categories = [category] if category else list(AMAZON_CATEGORIES)
        unknown = [c for c in categories if c not in AMAZON_CATEGORIES]
        if unknown:
            raise ConfigError(f"--category {unknown[0]}: this project's music categories are "
                              f"{', '.join(AMAZON_CATEGORIES)}.")
        if sha256:
            raise ConfigError("--sha256 checks one file; with amazon2023 there are two per category "
                              "(reviews and meta): verify them with `sha256sum` instead.")
        for cat in categories:
            for url in (f"{AMAZON_BASE}/review_categories/{cat}.jsonl.gz",
                        f"{AMAZON_BASE}/meta_categories/meta_{cat}.jsonl.gz"):
                path = os.path.join(dest, os.path.basename(url))
                done.append((path, fetch(mirrored(url, mirror), path, progress=progress)))
    else:  # music4all-onion
        if not zenodo_record:
            raise ConfigError("music4all-onion: pass --zenodo-record ID, the number at the end of the dataset's "
                              "Zenodo DOI (10.5281/zenodo.ID); every file of the record is fetched and checked "
                              "against the MD5 Zenodo publishes.")
        api = mirrored(ZENODO_API + str(zenodo_record), mirror)
        try:
            with urllib.request.urlopen(api, timeout=60) as response:
                record = json.load(response)
        except (OSError, ValueError) as e:
            raise DataFormatError(f"Could not read the Zenodo record {api}: {e}.") from e
        files = record.get("files") or []
        if isinstance(files, dict):  # the InvenioRDM shape: {"entries": {key: entry}}
            files = list((files.get("entries") or {}).values())
        for entry in files:
            algorithm, _, value = entry.get("checksum", "").partition(":")
            links = entry.get("links", {})
            url = links.get("content") or links["self"]  # "self" is the content link in the legacy shape
            path = os.path.join(dest, entry["key"])
            done.append((path, fetch(mirrored(url, mirror), path, md5=value if algorithm == "md5" else None,
                                     progress=progress)))
        if not done:
            raise DataFormatError(f"{api}: the record lists no files; check the record id.")
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.convert download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help=f"one of {', '.join(PUBLIC + tuple(ON_REQUEST))}")
    parser.add_argument("--dest", required=False, default=None, help="folder for the raw files")
    parser.add_argument("--category", default=None, help=f"amazon2023: one of {', '.join(AMAZON_CATEGORIES)}")
    parser.add_argument("--sha256", default=None, help="verify the (single) downloaded file against this value")
    parser.add_argument("--zenodo-record", default=None, help="music4all-onion: the Zenodo record id")
    parser.add_argument("--mirror", default=None, help="fetch from this scheme://host instead (same paths)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.dest is None and args.dataset not in ON_REQUEST:
            raise ConfigError("--dest RAW_DIR is required: the folder the raw files are written to.")
        files = download(args.dataset, args.dest, category=args.category, sha256=args.sha256,
                         zenodo_record=args.zenodo_record, mirror=args.mirror, progress=not args.no_progress)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, digest in files:
        print(f"{path}  sha256 {digest}")
    print(f"next: python -m recbole_psrq.convert {args.dataset} --src {args.dest} --out converted/<name>")
    return 0

