#!/bin/sh
# shellcheck disable=SC2154,SC2034 # dracut's root and rootok
# dracut cmdline hook: root=vmtest is ours.
[ "$root" = vmtest ] && rootok=1
