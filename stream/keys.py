"""CURVE keys for the publisher and its subscribers: making key folders and loading keys safely.

Layout made by :func:`create_curve_keys` (``meshstream keys DIR``)::

    DIR/server/server.key_secret          the publisher's key pair (mode 0600)
    DIR/server/server.key                 its public key
    DIR/server/authorized_clients/NAME.key  public keys of the clients allowed in
    DIR/NAME/NAME.key_secret              one folder per client: its key pair (mode 0600)
    DIR/NAME/NAME.key, DIR/NAME/server.key  its public key and the server's

The publisher is given ``DIR/server`` (``meshstream run --curve-keys DIR/server``), each client
only its own ``DIR/NAME`` (``meshstream listen --curve-keys DIR/NAME --client-name NAME``): no
party holds another's secret. Key files are ZeroMQ certificates (zmq.auth's format). A secret key
file that its group or other users may read is refused, as OpenSSH refuses such private keys.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Sequence

import zmq
import zmq.auth
from zmq.utils import z85

SERVER = "server"
log = logging.getLogger("meshstream.keys")


class CurveKeyError(Exception):
    """A key file or folder is missing, unreadable, malformed or not private; the text says which
    file and what to do."""


def _check_name(name: str) -> None:
    if not name or name == SERVER or not all(c.isalnum() or c in "-_" for c in name):
        raise CurveKeyError(f"client name {name!r}: use letters, digits, '-' and '_' (and not {SERVER!r})")


def _private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _new_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (0600) into ``folder`` (mode 0700, so the secret is never
    readable by others, not even before its chmod)."""
    public, secret = (Path(p) for p in zmq.auth.create_certificates(_private_folder(folder), name))
    os.chmod(secret, 0o600)
    return public, secret


def create_curve_keys(directory: str | os.PathLike, clients: Sequence[str] = ("client",)) -> Path:
    """Make (or extend) a CURVE key folder: ``DIR/server`` with the server's pair and
    ``authorized_clients/``, and ``DIR/<name>`` with each client's pair and the server's public
    key. An existing server pair is kept (so new clients can be added); an existing client
    folder is never overwritten. Returns DIR."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CurveKeyError(f"{directory} is a file; give a folder to make the keys in")
    for name in clients:
        _check_name(name)
        if (directory / name).exists():
            raise CurveKeyError(f"{directory / name} already exists; pick another client name or delete that "
                                "folder to make new keys for it")
    server = directory / SERVER
    server_public = server / f"{SERVER}.key"
    if not (server / f"{SERVER}.key_secret").exists():
        if server.exists() and any(server.iterdir()):
            raise CurveKeyError(f"{server} exists but has no server.key_secret; delete it or pick another folder")
        server_public, _ = _new_pair(server, SERVER)
    authorized = _private_folder(server / "authorized_clients")
    for name in clients:
        client_public, _ = _new_pair(directory / name, name)
        (directory / name / f"{SERVER}.key").write_bytes(server_public.read_bytes())
        (authorized / client_public.name).write_bytes(client_public.read_bytes())
    return directory


def _z85_key(value: bytes | None) -> bool:
    if value is None or len(value) != 40:
        return False
    try:
        return len(z85.decode(value)) == 32
    except (ValueError, KeyError, IndexError):
        return False


def _read_certificate(path: Path) -> tuple[bytes | None, bytes | None]:
    if not path.exists():
        raise CurveKeyError(f"CURVE key file {path} does not exist (make keys with `meshstream keys DIR`)")
    if not path.is_file():
        raise CurveKeyError(f"CURVE key file {path} is not a file")
    try:
        return zmq.auth.load_certificate(path)
    except ValueError:
        return None, None
    except OSError as exc:
        raise CurveKeyError(f"cannot read CURVE key file {path}: {exc.strerror or exc}") from None


def check_private(path: Path) -> None:
    """Refuse a secret key file that its group or other users may access (POSIX only)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CurveKeyError(f"CURVE secret key {path} is accessible by other users (mode {mode:04o}); "
                            f"run `chmod 600 {path}`")


def load_secret_key(path: str | os.PathLike, role: str = "") -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` certificate, after checking that only its
    owner can read it and that the two keys belong together. Raises CurveKeyError."""
    path = Path(path)
    public, secret = _read_certificate(path)
    check_private(path)
    what = f"{role} " if role else ""
    if not (_z85_key(public) and _z85_key(secret)):
        raise CurveKeyError(f"{path} is not a CURVE {what}secret key file (expected a ZeroMQ certificate with "
                            "public-key and secret-key; make new keys with `meshstream keys DIR`)")
    if zmq.curve_public(secret) != public:
        raise CurveKeyError(f"{path}: its public key does not match its secret key (the file was edited; "
                            "make new keys with `meshstream keys DIR`)")
    return public, secret


def load_public_key(path: str | os.PathLike) -> bytes:
    """The Z85 public key of a ``.key`` certificate. Raises CurveKeyError."""
    path = Path(path)
    public, _ = _read_certificate(path)
    if not _z85_key(public):
        raise CurveKeyError(f"{path} is not a CURVE public key file (expected a ZeroMQ certificate with "
                            "public-key; copy it again from the key folder)")
    return public


def load_server_keys(directory: str | os.PathLike) -> tuple[bytes, bytes, Path]:
    """The server's (public, secret) keys and its ``authorized_clients`` folder, all checked
    (each authorised ``.key`` parses). Raises CurveKeyError naming the file or folder."""
    directory = Path(directory)
    if not directory.is_dir():
        state = "is not a folder" if directory.exists() else "does not exist"
        raise CurveKeyError(f"CURVE key folder {directory} {state} (make one with `meshstream keys DIR` and "
                            "give the publisher DIR/server)")
    public, secret = load_secret_key(directory / f"{SERVER}.key_secret", "server")
    authorized = directory / "authorized_clients"
    if not authorized.is_dir():
        raise CurveKeyError(f"CURVE key folder {directory} has no authorized_clients/ folder (put the public "
                            "key of each client allowed in there, e.g. with `meshstream keys DIR --client NAME`)")
    client_keys = sorted(authorized.glob("*.key"))
    if not client_keys:
        raise CurveKeyError(f"{authorized} holds no *.key file, so no client could connect (add the public "
                            "key of each client allowed in)")
    for path in client_keys:
        load_public_key(path)
    others = sorted(p.name for p in directory.glob("*.key_secret") if p.name != f"{SERVER}.key_secret")
    if others:
        log.warning("%s also holds client secret keys (%s); the publisher needs none of them: give each client "
                    "its own folder (`meshstream keys DIR`)", directory, ", ".join(others))
    return public, secret, authorized
