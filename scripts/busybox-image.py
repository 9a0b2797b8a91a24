#!/usr/bin/env python3
"""Builds a one-layer OCI image archive of a static busybox, for `ctr images import`.

No registry is reachable in CI, so the test image is made here from /bin/busybox
(Debian's busybox-static): usage: busybox-image.py OUT.tar [IMAGE-NAME]
With --rootfs it writes only the layer, a root filesystem tar for `docker import`:
    busybox-image.py --rootfs OUT.tar
With --pause the image's entrypoint sleeps for ever, as CRI's pod sandbox (pause) image must:
    busybox-image.py --pause OUT.tar IMAGE-NAME
"""
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"
DEFAULT_NAME = "docker.io/library/busybox-shim-test:latest"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def add_bytes(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def layer_tar():
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run"]:
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        with open(BUSYBOX, "rb") as f:
            add_bytes(tar, "bin/busybox", f.read(), 0o755)
        for applet in sorted(set(applets.stdout.split()) - {"busybox"}):
            link = tarfile.TarInfo("bin/" + applet)
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
        add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        add_bytes(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    add_bytes(tar, "blobs/sha256/" + digest, data)
    return "sha256:" + digest


def write_rootfs(out):
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(layer_tar())
    os.replace(tmp, out)


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--rootfs":
        return write_rootfs(args[1])
    pause = bool(args) and args[0] == "--pause"
    if pause:
        args = args[1:]
    if len(args) not in (1, 2) or args[0].startswith("-"):
        sys.exit(__doc__)
    out, name = args[0], args[1] if len(args) == 2 else DEFAULT_NAME
    layer = layer_tar()
    run = {"Entrypoint": ["/bin/sleep", "2147483647"]} if pause else {"Cmd": ["sh"]}
    config = {
        "architecture": ARCH,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], **run},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "blobs")
        add_dir(tar, "blobs/sha256")
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": blob(tar, config_bytes), "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": blob(tar, layer), "size": len(layer)}],
        }
        manifest_bytes = json.dumps(manifest).encode()
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(tar, manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": ARCH, "os": "linux"},
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }],
        }
        add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes(tar, "index.json", json.dumps(index).encode())
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
