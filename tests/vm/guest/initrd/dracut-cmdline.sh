#!/bin/sh
# dracut cmdline hook: root=vmtest is ours.
[ "$root" = vmtest ] && rootok=1
