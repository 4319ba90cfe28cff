"""Look at DICOM files in OHIF by hand, with the viewer test's own harness (``make view``).

    python -m tests.support.view results/seg results/sr ct/

Starts a throwaway Orthanc (storage in a temporary folder), stores every ``.dcm`` file under
the given paths, serves OHIF (``make viewer-tools``) in front of it on loopback and prints the
address of each study; Ctrl-C stops both and deletes the storage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.support import ohif, orthanc


def dicom_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        files.extend(sorted(path.rglob("*.dcm")) if path.is_dir() else [path])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.view", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (searched for *.dcm)")
    args = parser.parse_args(argv)
    missing = orthanc.missing() + ohif.missing()
    if missing:
        print("missing (run `make viewer-tools`):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    absent = [str(p) for p in args.paths if not p.exists()]
    if absent:
        print(f"not found: {' '.join(absent)}", file=sys.stderr)
        return 2
    files = dicom_files(args.paths)
    if not files:
        print(f"no .dcm file under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lnq-orthanc-") as storage:
        server = orthanc.start_orthanc(Path(storage))
        site = None
        try:
            for path in files:
                server.upload(path)
            site = ohif.serve_viewer(server.url)
            print(f"{len(files)} files stored; OHIF {ohif.OHIF_VERSION} at {site.url}/")
            for study in server.get_json("/studies"):  # type: ignore[union-attr]
                uid = server.get_json(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]  # type: ignore[index]
                print(f"  {site.url}/viewer?StudyInstanceUIDs={uid}")
            print("Ctrl-C stops the viewer and Orthanc.")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            if site is not None:
                site.stop()
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
