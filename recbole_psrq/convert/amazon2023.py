"""Amazon Reviews 2023 (McAuley Lab; Digital_Music, CDs_and_Vinyl, ...) -> RecBole atomic files + item text.

    python -m recbole_psrq.convert amazon2023 --src RAW_DIR --out OUT_DIR/amazon-digital-music \\
        [--category Digital_Music] [--rating-threshold 4] [--description-chars 2000] [--no-meta] [--kcore K]

Input (``--src``; JSON lines, UTF-8, each file may be ``.gz`` / ``.bz2``):
- ``<Category>.jsonl``: one review per line with ``rating, title, text, images, asin, parent_asin, user_id,
  timestamp`` (milliseconds), ``helpful_vote, verified_purchase``. ``--category`` picks the file; without it
  the only ``<Category>.jsonl`` of ``--src`` is used (several -> an error listing them).
- ``meta_<Category>.jsonl``: one item per line with ``parent_asin, title, features`` (list), ``description``
  (list), ``categories`` (list), ``store``, ``details``, ``images``, ... Required unless ``--no-meta``.

Output (``--out``, named like the dataset):
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float label:float rating:float
  helpful_vote:float verified_purchase:float``. One row per review (item = ``parent_asin``; a user who
  reviewed an item twice has two rows, counted in the README), ``timestamp`` = the review time in whole unix
  seconds (milliseconds floored), label = rating >= ``--rating-threshold`` (4, the paper's rule). Sorted by
  user, then time, then file line. ``load_col`` in the yaml names ``user_id item_id timestamp label`` only:
  ``rating`` determines the label.
- ``<name>.item``: ``item_id:token store:token`` (store name NFKC lower-case; often the artist for music).
- ``<name>.item_text.tsv``: ``item_id text title store categories``; text = :func:`item_text`.
- ``<name>.yaml``, ``<name>.stats.json``, ``README.md``.
"""
import json
import math
import os
import re

import numpy as np
import pandas as pd

from recbole_psrq.convert import common, music4all
from recbole_psrq.errors import ConfigError, DataFormatError

DATASET = "Amazon Reviews 2023"
DEFAULT_DESCRIPTION_CHARS = 2000
HINT = ("Pass --src pointing at the folder with <Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz] from "
        "https://amazon-reviews-2023.github.io (e.g. Digital_Music.jsonl.gz, meta_Digital_Music.jsonl.gz).")
FIX_JSON = ("Each line of an Amazon Reviews 2023 file is one JSON object; re-download the file or decompress "
            "it again (a truncated download ends in a broken line).")
LICENCE = (
    "**Do not commit or redistribute these files.** Amazon Reviews 2023 is released by the McAuley Lab (UC San "
    "Diego) for research use; reviews and product metadata are Amazon content. Cite: Y. Hou, J. Li, Z. He, "
    "A. Yan, X. Chen, J. McAuley, \"Bridging Language and Items for Retrieval and Recommendation\", "
    "arXiv:2403.03952, 2024.")
TEXT_TEMPLATE = ("{title}. Store: {store}. Categories: {c1} > {c2}. Features: {f1}; {f2}. "
                 "Description: {description}")
_REVIEW_FILE = re.compile(r"(.+)\.jsonl(\.gz|\.bz2)?")


def add_arguments(parser, fmt=None):
    parser.add_argument("--category", default=None,
                        help="category file to convert, e.g. Digital_Music or CDs_and_Vinyl (default: the only "
                             "<Category>.jsonl in --src)")
    parser.add_argument("--rating-threshold", type=float, default=4.0,
                        help="label 1 = rating >= this (default 4, the paper's rule)")
    parser.add_argument("--description-chars", type=int, default=DEFAULT_DESCRIPTION_CHARS,
                        help=f"description characters kept in the item text (default {DEFAULT_DESCRIPTION_CHARS}, "
                             "cut at a word boundary)")
    parser.add_argument("--no-meta", action="store_true",
                        help="convert without meta_<Category>.jsonl (no item text, empty store)")


# --------------------------------------------------------------------------------------------- files
def find_categories(src):
    """Categories with a review file in ``src`` (``X.jsonl[.gz|.bz2]``, ``meta_*`` excluded), sorted."""
    if not os.path.isdir(src):
        raise DataFormatError(f"{DATASET}: --src {src} is not a folder. {HINT}")
    found = set()
    for fname in os.listdir(src):
        m = _REVIEW_FILE.fullmatch(fname)
        if m and not fname.startswith("meta_") and os.path.isfile(os.path.join(src, fname)):
            found.add(m.group(1))
    return sorted(found)


def resolve_category(src, category):
    found = find_categories(src)
    if category:
        return category, common.find_input(src, f"{category}.jsonl", dataset=DATASET, hint=(
            f"Review files found in {src}: {', '.join(found) or 'none'}. " + HINT))
    if len(found) == 1:
        return found[0], common.find_input(src, f"{found[0]}.jsonl", dataset=DATASET, hint=HINT)
    if not found:
        raise DataFormatError(f"{DATASET}: no <Category>.jsonl[.gz|.bz2] review file in {src} "
                              f"(files: {sorted(os.listdir(src))[:12]}). {HINT}")
    raise ConfigError(f"{src} holds the review files of several categories ({', '.join(found)}); pick one with "
                      "--category, e.g. --category " + found[0] + ".")


def iter_json_lines(path):
    """(line number, object) for every non-blank line; a broken line is an error naming file and line."""
    try:
        with common.open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{path}, line {lineno}: not valid JSON ({e.msg} at column {e.colno}). "
                                          f"{FIX_JSON}") from None
                if not isinstance(obj, dict):
                    raise DataFormatError(f"{path}, line {lineno}: expected a JSON object, found "
                                          f"{type(obj).__name__}. {FIX_JSON}")
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid UTF-8 ({e.reason}). {FIX_JSON}") from e
    except EOFError as e:
        raise DataFormatError(f"{path}: the compressed file ends early ({e}). {FIX_JSON}") from e


def _token_field(obj, key, path, lineno):
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\t\r\n"):
        raise DataFormatError(f"{path}, line {lineno}: '{key}' is {value!r}; every review needs a non-empty "
                              f"'{key}' string without tabs/newlines. {FIX_JSON}")
    return value.strip()


def _number_field(obj, key, path, lineno, integer=False, default=None):
    value = obj.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise DataFormatError(f"{path}, line {lineno}: '{key}' is {value!r}, expected "
                              f"{'an integer' if integer else 'a number'}. {FIX_JSON}")
    return value


def read_reviews(path, progress=None):
    """Review file -> DataFrame user_id, item_id, rating, ts_ms, helpful_vote, verified_purchase, line."""
    cols = {k: [] for k in ("user_id", "item_id", "rating", "ts_ms", "helpful_vote", "verified_purchase", "line")}
    for lineno, obj in iter_json_lines(path):
        cols["user_id"].append(_token_field(obj, "user_id", path, lineno))
        cols["item_id"].append(_token_field(obj, "parent_asin", path, lineno))
        cols["rating"].append(float(_number_field(obj, "rating", path, lineno)))
        cols["ts_ms"].append(int(_number_field(obj, "timestamp", path, lineno, integer=True)))
        cols["helpful_vote"].append(float(_number_field(obj, "helpful_vote", path, lineno, default=0)))
        verified = obj.get("verified_purchase", False)
        if not isinstance(verified, bool):
            raise DataFormatError(f"{path}, line {lineno}: 'verified_purchase' is {verified!r}, expected true or "
                                  f"false. {FIX_JSON}")
        cols["verified_purchase"].append(1.0 if verified else 0.0)
        cols["line"].append(lineno)
        if progress and len(cols["line"]) % 1_000_000 == 0:
            progress(len(cols["line"]))
    return pd.DataFrame({
        "user_id": np.asarray(cols["user_id"], dtype=object), "item_id": np.asarray(cols["item_id"], dtype=object),
        "rating": np.asarray(cols["rating"], dtype=np.float64), "ts_ms": np.asarray(cols["ts_ms"], dtype=np.int64),
        "helpful_vote": np.asarray(cols["helpful_vote"], dtype=np.float64),
        "verified_purchase": np.asarray(cols["verified_purchase"], dtype=np.float64),
        "line": np.asarray(cols["line"], dtype=np.int64)})


def _strings(value):
    """A meta field (str, list of str, None, ...) -> list of clean non-empty strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_strings(v))
        return out
    text = common.clean_text(value)
    return [text] if text else []


def read_meta(path, wanted):
    """meta file -> ({parent_asin: (title, store, categories, features, description)}, info)."""
    meta, info = {}, {"file": os.path.basename(path), "rows": 0, "duplicate_ids": 0}
    for lineno, obj in iter_json_lines(path):
        info["rows"] += 1
        item = obj.get("parent_asin")
        if not isinstance(item, str) or not item.strip():
            raise DataFormatError(f"{path}, line {lineno}: 'parent_asin' is {item!r}; every meta line needs it. "
                                  f"{FIX_JSON}")
        item = item.strip()
        if item not in wanted:
            continue
        if item in meta:
            info["duplicate_ids"] += 1
            continue
        meta[item] = (" ".join(_strings(obj.get("title"))), " ".join(_strings(obj.get("store"))),
                      _strings(obj.get("categories")), _strings(obj.get("features")),
                      _strings(obj.get("description")))
    return meta, info


def item_text(title="", store="", categories=(), features=(), description=(),
              description_chars=DEFAULT_DESCRIPTION_CHARS):
    """``"{title}. Store: {store}. Categories: c1 > c2. Features: f1; f2. Description: {description}"``:
    parts without data are left out, a full stop is added where a part does not end in . ! ?, the
    description paragraphs are joined by a space and cut to ``description_chars`` at a word boundary.
    Returns (text, description_truncated)."""
    parts = []
    if title:
        parts.append(music4all._sentence(title))
    if store:
        parts.append(music4all._sentence(f"Store: {store}"))
    if categories:
        parts.append(music4all._sentence("Categories: " + " > ".join(categories)))
    if features:
        parts.append(music4all._sentence("Features: " + "; ".join(features)))
    desc = common.clean_text(" ".join(description))
    cut = music4all.cut_words(desc, description_chars)
    if cut:
        parts.append(f"Description: {cut}")
    return " ".join(parts), len(cut) < len(desc)


# ------------------------------------------------------------------------------------------- convert
def convert(args, command):
    name = common.check_args(args)
    out, src = args.out, args.src
    if args.description_chars < 0:
        raise ConfigError(f"--description-chars must be >= 0, got {args.description_chars}.")
    category, reviews_path = resolve_category(src, args.category)
    meta_path = None
    if not args.no_meta:
        meta_path = common.find_input(src, f"meta_{category}.jsonl", dataset=DATASET, hint=(
            f"The item text comes from meta_{category}.jsonl[.gz]; download it too, or pass --no-meta to "
            "convert without item text."))
    common.log(args, f"reading {reviews_path}")
    reviews = read_reviews(reviews_path, progress=lambda n: common.log(args, f"  {n:,} reviews"))
    if len(reviews) == 0:
        raise DataFormatError(f"{reviews_path}: no reviews (empty file). {FIX_JSON}")
    stats = {"name": name, "format": "amazon2023", "command": command, "src": src, "category": category,
             "reviews_file": os.path.basename(reviews_path), "raw_reviews": len(reviews),
             "raw_users": int(reviews["user_id"].nunique()), "raw_items": int(reviews["item_id"].nunique()),
             "malformed": common.MalformedRows().as_dict()}
    stats["repeated_pair_rows"] = int(reviews.duplicated(["user_id", "item_id"]).sum())
    stats["exact_duplicate_rows"] = int(reviews.duplicated(["user_id", "item_id", "ts_ms", "rating"]).sum())
    reviews = common.sort_inter(reviews, time_column="ts_ms", tie="line")
    before = len(reviews)
    reviews, rounds = common.kcore(reviews, args.kcore)
    stats.update(kcore=args.kcore, kcore_rounds=rounds, rows_removed_by_kcore=before - len(reviews))
    reviews["timestamp"] = (reviews["ts_ms"] // 1000).astype(np.float64)
    reviews["label"] = common.rating_labels(reviews["rating"].to_numpy(), args.rating_threshold)
    stats["rating_threshold"] = args.rating_threshold
    music4all.count_stats(reviews, stats)
    stats["ratings"] = {f"{r:g}": int(n) for r, n in sorted(reviews["rating"].value_counts().items())}
    stats["first_review"] = music4all.iso_day(reviews["timestamp"].min())
    stats["last_review"] = music4all.iso_day(reviews["timestamp"].max())

    items = np.sort(pd.unique(reviews["item_id"]).astype(str))
    meta, meta_info = ({}, None)
    if meta_path:
        common.log(args, f"reading {meta_path}")
        meta, meta_info = read_meta(meta_path, set(items))
    texts, stores, truncated = [], [], 0
    for item in items:
        title, store, categories, features, description = meta.get(item, ("", "", [], [], []))
        text, cut = item_text(title, store, categories, features, description, args.description_chars)
        truncated += cut
        stores.append(common.name_token(store))
        if text:
            texts.append((item, text, title, store, " > ".join(categories)))
    stats["meta"] = meta_info
    stats["items_without_meta"] = int(sum(1 for i in items if i not in meta))
    stats["items_without_text"] = len(items) - len(texts)
    stats["descriptions_truncated"] = truncated
    stats["description_chars"] = args.description_chars

    item_frame = pd.DataFrame({"item_id": items, "store": stores})
    text_frame = pd.DataFrame(texts, columns=["item_id", "text", "title", "store", "categories"])
    common.write_outputs(out, name, reviews, item_frame, text_frame,
                         extra_inter=["rating", "helpful_vote", "verified_purchase"])
    common.write_stats_and_readme(out, stats, render_readme(stats))
    common.log(args, f"wrote {out}")
    return stats


# -------------------------------------------------------------------------------------------- README
def render_readme(s):
    name, rows, items = s["name"], s["rows"], s["items"]
    m = s["meta"]
    numbers = [
        (f"raw reviews (non-blank lines of `{s['reviews_file']}`)", common.fmt_count(s["raw_reviews"])),
        ("raw users / items (parent_asin)", f"{common.fmt_count(s['raw_users'])} / {common.fmt_count(s['raw_items'])}"),
        ("reviews of a (user, item) pair reviewed before (kept)", common.fmt_count(s["repeated_pair_rows"])),
        ("exact duplicates (same user, item, time, rating; kept)", common.fmt_count(s["exact_duplicate_rows"])),
        common.kcore_row(s),
        ("**users**", f"**{common.fmt_count(s['users'])}**"),
        ("**items**", f"**{common.fmt_count(items)}**"),
        (f"**rows in `{name}.inter`**", f"**{common.fmt_count(rows)}**"),
        (f"label 1 (rating >= {s['rating_threshold']:g}) / label 0",
         f"{common.fmt_count(s['label_positive'], rows)} / {common.fmt_count(s['label_negative'], rows)}"),
        ("ratings", ", ".join(f"{r}: {n:,}" for r, n in s["ratings"].items())),
        ("malformed lines", f"{s['malformed']['total']} (a broken line stops the conversion with an error naming "
                            "file and line)"),
        ("items without a meta line (kept)", common.fmt_count(s["items_without_meta"], items)),
        ("items without any text (absent from `.item_text.tsv`)", common.fmt_count(s["items_without_text"], items)),
        (f"descriptions cut to {s['description_chars']:,} characters", common.fmt_count(s["descriptions_truncated"])),
        ("first / last review (UTC)", f"{s['first_review']} / {s['last_review']}"),
    ]
    if m:
        numbers.insert(11, (f"meta lines (`{m['file']}`) / duplicate parent_asin (first kept)",
                            f"{common.fmt_count(m['rows'])} / {m['duplicate_ids']}"))
    sections = [
        ("Files", ["\n".join([
            f"- `{name}.inter`: `user_id:token item_id:token timestamp:float label:float rating:float "
            "helpful_vote:float verified_purchase:float` (verified_purchase 1/0).",
            f"- `{name}.item`: `item_id:token store:token` (store name NFKC, lower-case, whitespace collapsed, "
            "double quotes dropped; empty without meta).",
            f"- `{name}.item_text.tsv`: `item_id text title store categories` (categories joined by ` > `).",
            f"- `{name}.yaml`: RecBole dataset config; `load_col` names `user_id item_id timestamp label` only "
            "(`rating` determines the label and must never be a feature).",
            f"- `{name}.stats.json`: every number of this page."]),
            "Only items that occur in the written interactions are in `.item` and `.item_text.tsv`."]),
        ("Interactions, label and time", [
            f"Category `{s['category']}`. One row per review: item = `parent_asin` (the product, so the formats/"
            "editions of one album share an item; `asin` is not used). A user who reviewed the same item more than "
            "once keeps every review (counted above); nothing is de-duplicated.",
            f"Label: rating >= {s['rating_threshold']:g} = 1, else 0 (the paper's rule for Amazon); the rating is "
            "kept in the `rating` column.",
            "`timestamp` = review time in unix seconds (the file's milliseconds, floored). Rows are sorted by user "
            "(string order), then time in milliseconds, then line of the file, so the output is byte-identical for "
            "the same input. Every valid review is kept (filters only through `--kcore`); reviews of items "
            "without meta are kept.",
        ]),
        ("Item text", [
            "Template (parts with no data are left out; a full stop is added where a part does not end in . ! ?):",
            f"`{TEXT_TEMPLATE}`",
            "From the meta line of the item: `title`, `store` (for music usually the artist), `categories` joined "
            "by ` > `, `features` joined by `; `, `description` paragraphs joined by a space and cut to "
            f"{s['description_chars']:,} characters at a word boundary (no ellipsis). `details`, `images`, "
            "`videos`, prices and ratings of the meta file are not used; review texts are not used.",
            "Items without any text are not in `.item_text.tsv` (the semantic-ID engine gives them its unknown "
            "code)." + ("" if m else " **No meta file was read (`--no-meta`): no item has text.**"),
        ]),
        ("Audio", ["Amazon Reviews ships no audio descriptors: no audio file is written and the yaml lists no "
                   "`audio` embeddings."]),
    ]
    return common.render_readme(f"{name}: converted Amazon Reviews 2023 ({s['category']})", LICENCE, s["command"],
                                numbers, sections)
