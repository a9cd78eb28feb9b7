#!/bin/sh
# Build the sloproxy/python-base image from Debian packages, without a registry:
# debootstrap a minimal Debian root file system with Python and the model
# libraries, then docker import it. Run as root on a Debian/Ubuntu host with
# debootstrap installed (apt-get install debootstrap) and a Docker Engine.
#
# Settings (environment): SUITE (bookworm), MIRROR (http://deb.debian.org/debian),
# PACKAGES (comma-separated, see below), IMAGE (sloproxy/python-base).
set -eu

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=${PACKAGES:-python3,python3-numpy,python3-joblib,python3-sklearn,python3-torch}
IMAGE=${IMAGE:-sloproxy/python-base}

rootfs=$(mktemp -d /tmp/sloproxy-python-base.XXXXXX)
trap 'rm -rf --one-file-system "$rootfs"' EXIT

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import --change 'CMD ["/usr/bin/python3"]' - "$IMAGE"
echo "built $IMAGE"
