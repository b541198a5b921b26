#!/usr/bin/env python3
"""Packs Lambda binaries as provided.al2023 wants them: one zip per function with the
binary inside as `bootstrap`. Reproducible: fixed timestamps and permissions, so the same
binary always gives the same zip (and the same hash for Terraform).

    zip.py --out DIR target/release/warmfleet-registration ...

Prints each zip's path and size.
"""

import argparse
import os
import sys
import zipfile

EPOCH = (1980, 1, 1, 0, 0, 0)


def pack(binary: str, out_dir: str) -> str:
    name = os.path.basename(binary)
    path = os.path.join(out_dir, f"{name}.zip")
    info = zipfile.ZipInfo("bootstrap", date_time=EPOCH)
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode above is honoured
    with open(binary, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(info, data, compresslevel=9)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the zips")
    parser.add_argument("binaries", nargs="+", help="the functions' binaries")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for binary in args.binaries:
        if not os.path.isfile(binary):
            print(f"zip.py: {binary}: no such file (build it first)", file=sys.stderr)
            return 1
        path = pack(binary, args.out)
        print(f"{path}\t{os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
