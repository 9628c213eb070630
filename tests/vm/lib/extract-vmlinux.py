"""extract-vmlinux.py VMLINUZ OUTPUT

Writes the uncompressed kernel ELF found inside a bzImage whose payload is
xz-compressed (Debian's x86 kernels). The guest then boots without
decompressing itself, which takes seconds under TCG.
"""
import lzma
import sys

XZ_HEADER = b"\xfd7zXZ\x00"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[0])
    source, target = sys.argv[1], sys.argv[2]
    with open(source, "rb") as f:
        image = f.read()
    offset = image.find(XZ_HEADER)
    if offset < 0:
        sys.exit(f"extract-vmlinux: {source} has no xz payload")
    # The payload is followed by other data: decompress just the first stream.
    kernel = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[offset:])
    if kernel[:4] != b"\x7fELF":
        sys.exit(f"extract-vmlinux: the payload in {source} is not an ELF file")
    with open(target, "wb") as f:
        f.write(kernel)


if __name__ == "__main__":
    main()
