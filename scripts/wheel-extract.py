"""Extracts files from the wheels in a folder (the fetch scripts' helper).

Usage: wheel-extract.py WHEEL_DIR DEST MEMBER...

Each MEMBER (a path inside a wheel, e.g. nvidia/nccl/lib/libnccl.so.2) is written to
DEST/<its file name> through a temporary file that is renamed into place (a fetch cut short
leaves no half-written library), executable. Exits with a message naming the members no wheel
had.
"""
import glob
import os
import sys
import zipfile


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    wheels, dest, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
    found = set()
    for whl in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if name not in wanted:
                    continue
                out = os.path.join(dest, os.path.basename(name))
                part = out + ".part"
                with z.open(name) as src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.chmod(part, 0o755)
                os.replace(part, out)
                found.add(name)
    missing = wanted - found
    if missing:
        sys.exit("not in the wheel: " + ", ".join(sorted(missing)))


main()
