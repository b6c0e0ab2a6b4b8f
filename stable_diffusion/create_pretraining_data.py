"""Turn a coco_karpathy-style caption file into laion400m-format training parts.

Input: a jsonl file, one ``{"caption": ..., "image": <path>, "image_id": ...}`` per line (image
paths relative to the jsonl file's folder, or absolute).  Output under ``--output_path``::

    laion400m_format_data/part-000000[.gz]     caption \\t (empty) \\t base64 of the image file
    filelist/<output_name>.filelist            the part paths, the whole list repeated --num_repeat times
    filelist/<output_name>.filelist.list       the path of the .filelist

Bad input is reported and skipped, never fatal on its own: lines that are not UTF-8, not JSON or
lack the keys (named ``file:line``), and images that are missing or that PIL cannot decode; a
summary line says how many records were written and skipped.  The image file bytes are stored
unchanged.  The parts are written to a temporary folder that replaces ``laion400m_format_data/``
only when everything succeeded (so no stale or orphan parts), then the filelists are written;
a file without any usable record writes nothing.

    python create_pretraining_data.py --input_path ../data/demo/digits_coco.jsonl \\
        --output_path ./processed_data --per_part_file_num 1000 --num_repeat 100 --save_gzip_file
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import base64
import io
import shutil

from PIL import Image

from common.arg_checks import require_positive, usage_errors
from common.checkpoint import replace_dir
from common.laion import write_laion_parts
from common.safe_data import BadSampleLog, iter_jsonl


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="coco_karpathy-style jsonl -> laion400m-format part files + filelists")
    parser.add_argument("--input_path", required=True, help="jsonl file with one caption/image record per line")
    parser.add_argument("--output_path", default="./processed_data", help="output folder")
    parser.add_argument("--output_name", default="custom_dataset", help="name of the .filelist/.filelist.list files")
    parser.add_argument("--caption_key", default="caption", help="key of the caption in each record")
    parser.add_argument("--image_key", default="image", help="key of the image path in each record")
    parser.add_argument("--per_part_file_num", type=int, default=1000, help="records per part file")
    parser.add_argument("--save_gzip_file", action="store_true", help="write gzip parts (part-NNNNNN.gz)")
    parser.add_argument("--num_repeat", type=int, default=1,
                        help="times the list of parts is repeated in the .filelist (more entries than readers keep every reader busy)")
    args = parser.parse_args(argv)
    with usage_errors(parser):  # exit 2 naming the flag, before anything is read or written
        require_positive(args, "per_part_file_num", "num_repeat")
    return args


def _print_err(message):
    print(f"[skip] {message}", file=sys.stderr)


def read_records(input_path, caption_key, image_key, stats, bad=None):
    """Yield ``(caption, img_b64)`` for each usable line of ``input_path``; count the rest in
    ``stats["skipped"]`` (and the used ones in ``stats["written"]``).

    A line that is not UTF-8 / not JSON / lacks a key, and an image that is missing or does not
    decode completely, is skipped and recorded in ``bad`` (a
    :class:`common.safe_data.BadSampleLog`, default: one printing the first few to stderr as
    ``input_path:line``).

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
    """
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"--input_path {input_path!r} does not exist")
    bad = bad if bad is not None else BadSampleLog("--input_path", emit=_print_err)
    base = os.path.dirname(os.path.abspath(input_path))
    start = bad.count
    for n, row in iter_jsonl(input_path, bad, required=(caption_key, image_key)):
        caption, rel = str(row[caption_key]), str(row[image_key])
        path = rel if os.path.isabs(rel) else os.path.join(base, rel)
        reason = None
        try:
            with open(path, "rb") as img_file:
                raw = img_file.read()
            with Image.open(io.BytesIO(raw)) as im:
                im.load()  # full decode: catches truncated files
        except FileNotFoundError:
            reason = f"image {path!r} does not exist"
        except Exception as e:
            reason = f"image {path!r} is not readable ({type(e).__name__}: {e})"
        if reason is not None:
            bad.record(f"{input_path}:{n}", reason)
        stats["skipped"] = bad.count - start  # bad lines and bad images so far
        if reason is None:
            stats["written"] += 1
            yield caption, base64.b64encode(raw).decode("ascii")
    stats["skipped"] = bad.count - start


def _write_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    stats = {"written": 0, "skipped": 0}
    bad = BadSampleLog("--input_path", emit=_print_err)
    data_dir = os.path.abspath(os.path.join(args.output_path, "laion400m_format_data"))
    tmp_dir = f"{data_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        parts = write_laion_parts(read_records(args.input_path, args.caption_key, args.image_key, stats, bad), tmp_dir,
                                  per_part_file_num=args.per_part_file_num, save_gzip_file=args.save_gzip_file)
        print(f"written {stats['written']} records into {len(parts)} part file(s) under {data_dir}; skipped {stats['skipped']}")
        if bad.count:
            print(f"{args.input_path}: {bad.summary()}", file=sys.stderr)
        if not parts:
            raise SystemExit(f"error: no usable record in {args.input_path!r} (all {stats['skipped']} skipped); nothing written")
        replace_dir(tmp_dir, data_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # left only when something failed
    parts = [os.path.join(data_dir, os.path.basename(p)) for p in parts]
    filelist_dir = os.path.join(args.output_path, "filelist")
    os.makedirs(filelist_dir, exist_ok=True)
    filelist = os.path.join(filelist_dir, f"{args.output_name}.filelist")
    _write_text(filelist, "".join(p + "\n" for p in parts) * args.num_repeat)
    _write_text(filelist + ".list", os.path.abspath(filelist) + "\n")
    print(f"filelist: {filelist}.list ({len(parts)} part(s) x {args.num_repeat} repeats)")
    return stats


if __name__ == "__main__":
    main()
