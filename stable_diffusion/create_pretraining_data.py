"""Turn a coco_karpathy-style caption file into laion400m-format training parts.

Input: a jsonl file, one ``{"caption": ..., "image": <path>, "image_id": ...}`` per line (image
paths relative to the jsonl file's folder, or absolute).  Output under ``--output_path``::

    laion400m_format_data/part-000000[.gz]     caption \\t (empty) \\t base64 of the image file
    filelist/<output_name>.filelist            the part paths, the whole list repeated --num_repeat times
    filelist/<output_name>.filelist.list       the path of the .filelist

Images that are missing or that PIL cannot decode are reported and skipped; a summary line
says how many records were written and skipped.  The image file bytes are stored unchanged.

    python create_pretraining_data.py --input_path ../data/demo/digits_coco.jsonl \\
        --output_path ./processed_data --per_part_file_num 1000 --num_repeat 100 --save_gzip_file
"""
import argparse
import base64
import io
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))  # repo root, for common/

from PIL import Image  # noqa: E402

from common.laion import write_laion_parts  # noqa: E402


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
    if args.per_part_file_num < 1:
        parser.error(f"--per_part_file_num must be >= 1, got {args.per_part_file_num}")
    if args.num_repeat < 1:
        parser.error(f"--num_repeat must be >= 1, got {args.num_repeat}")
    return args


def read_records(input_path, caption_key, image_key, stats):
    """Yield ``(caption, img_b64)`` for each usable line of ``input_path``; count the rest in ``stats``.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
    """
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"--input_path {input_path!r} does not exist")
    base = os.path.dirname(os.path.abspath(input_path))
    with open(input_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                caption, rel = str(row[caption_key]), str(row[image_key])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                stats["skipped"] += 1
                print(f"[skip] {input_path} line {n}: expected JSON with {caption_key!r} and {image_key!r} ({type(e).__name__}: {e})", file=sys.stderr)
                continue
            path = rel if os.path.isabs(rel) else os.path.join(base, rel)
            try:
                with open(path, "rb") as img_file:
                    raw = img_file.read()
                with Image.open(io.BytesIO(raw)) as im:
                    im.load()  # full decode: catches truncated files
            except FileNotFoundError:
                stats["skipped"] += 1
                print(f"[skip] {input_path} line {n}: image {path!r} does not exist", file=sys.stderr)
                continue
            except Exception as e:
                stats["skipped"] += 1
                print(f"[skip] {input_path} line {n}: image {path!r} is not readable ({type(e).__name__}: {e})", file=sys.stderr)
                continue
            stats["written"] += 1
            yield caption, base64.b64encode(raw).decode("ascii")


def main(argv=None):
    args = parse_args(argv)
    stats = {"written": 0, "skipped": 0}
    data_dir = os.path.join(args.output_path, "laion400m_format_data")
    parts = write_laion_parts(read_records(args.input_path, args.caption_key, args.image_key, stats), data_dir,
                              per_part_file_num=args.per_part_file_num, save_gzip_file=args.save_gzip_file)
    print(f"written {stats['written']} records into {len(parts)} part file(s) under {data_dir}; skipped {stats['skipped']}")
    if not parts:
        raise SystemExit(f"error: no usable record in {args.input_path!r} (all {stats['skipped']} skipped); nothing written")
    filelist_dir = os.path.join(args.output_path, "filelist")
    os.makedirs(filelist_dir, exist_ok=True)
    filelist = os.path.join(filelist_dir, f"{args.output_name}.filelist")
    with open(filelist, "w") as f:
        f.write("".join(os.path.abspath(p) + "\n" for p in parts) * args.num_repeat)
    with open(filelist + ".list", "w") as f:
        f.write(os.path.abspath(filelist) + "\n")
    print(f"filelist: {filelist}.list ({len(parts)} part(s) x {args.num_repeat} repeats)")
    return stats


if __name__ == "__main__":
    main()
