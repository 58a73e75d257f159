"""The cluster's CurveZMQ keys on disk: made, checked, and loaded as a process's CURVE identity.

A key directory (``Config.key_dir``: ``JPAR_KEY_DIR``, default ``~/.jpar/keys``) holds ZeroMQ
certificate files, in the format of pyzmq's ``zmq.auth.create_certificates``::

    server.key   server.key_secret     the head's keypair: the head listens (and connects) with it
    client.key   client.key_secret     every other process's (engines, drivers, actors, the CLI)

    the head's host       all four (``jpar keys``, or a head started off loopback, makes them)
    a host that joins     server.key, client.key, client.key_secret, copied from the head's host

Every public ``*.key`` file in the directory is a key that this host's listening sockets admit
(pyzmq's ZAP authenticator reads them): a peer must prove it holds the secret half of one of them,
so knowing the server's public key (which the connection file carries) gets nobody in. To admit a
host with a keypair of its own, copy its public ``.key`` file into the other hosts' directories.
Keys are read when a process first needs them, so add a host's key before starting the processes
that must admit it.

A secret readable by others is no secret: the directory is made 0700 and files are written
atomically (a private temporary file, then a rename) with mode 0600, and a directory or file that
another user can read or that belongs to someone else is refused at load with a
:class:`~jpar.errors.SecurityError` naming the ``chmod`` that fixes it. Messages stay HMAC-signed
with the cluster key as well: CURVE decides who may connect and hides the traffic; the signature
decides which cluster a message belongs to.
"""

from __future__ import annotations

import datetime
import glob
import logging
import os
import secrets
from dataclasses import dataclass, field

from . import transport
from ...config import Config, key_dir
from ...errors import SecurityError

__all__ = ["create_keys", "load_identity", "secure_process", "settings", "apply_settings", "prepare_head",
           "secure_head", "join_instructions", "join_files", "install_join_files", "JOIN_FILES", "check_private", "read_certificate", "HeadKeys", "SERVER", "CLIENT"]

log = logging.getLogger("jpar.keys")

SERVER = "server"
CLIENT = "client"
_HEADER = ("#   ****  Generated on {now} by jpar  ****\n"
           "#   ZeroMQ CURVE {what} Certificate ({name} of a jpar cluster)\n"
           "#   {advice}\n\n")


def _path(directory: str, name: str, secret: bool = False) -> str:
    return os.path.join(directory, f"{name}.key" + ("_secret" if secret else ""))


def check_private(path: str) -> None:
    """Refuse ``path`` (a key file or the key directory) unless it is ours and nobody else may
    read, write or enter it: the error names the ``chmod`` to run."""
    is_dir = os.path.isdir(path)
    want = "700" if is_dir else "600"
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecurityError(f"Cannot read {path}: {exc.strerror}. Run `jpar keys` to create the keys.") from None
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise SecurityError(f"{path} belongs to user id {st.st_uid}, not to you ({os.getuid()}): jpar uses only keys "
                            f"you own. Make your own with `jpar keys`, or run: chown {os.getuid()} {path}")
    mode = st.st_mode & 0o777
    if mode & 0o077:
        what = "key directory" if is_dir else "key file"
        raise SecurityError(f"The {what} {path} has mode {mode:04o}: other users can "
                            f"{'list or change' if is_dir else 'read or change'} it, so jpar refuses it. "
                            f"Run: chmod {want} {path}")


def read_certificate(path: str) -> tuple[str, str]:
    """(public, secret) Z85 keys of a certificate file (secret "" in a public one), after
    :func:`check_private`."""
    check_private(path)
    public = secret = ""
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("public-key"):
                public = line.split("=", 1)[1].strip(" \t'\"")
            elif line.startswith("secret-key"):
                secret = line.split("=", 1)[1].strip(" \t'\"")
    if len(public) != 40 or (secret and len(secret) != 40):
        raise SecurityError(f"{path} holds no valid CURVE key (40 Z85 characters). Make new keys with "
                            "`jpar keys --force` and copy them to the other hosts again.")
    return public, secret


def _write(path: str, text: str) -> None:
    """Write ``path`` atomically with mode 0600: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)   # exactly 0600, whatever the umask
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _certificate(name: str, public: str, secret: str = "") -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    if secret:
        head = _HEADER.format(now=now, what="**Secret**", name=name,
                              advice="DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    else:
        head = _HEADER.format(now=now, what="Public", name=name,
                              advice="Copy it to the key directory of every host that must admit this key.")
    body = f'metadata\ncurve\n    public-key = "{public}"\n'
    return head + body + (f'    secret-key = "{secret}"\n' if secret else "")


def _ensure_dir(directory: str) -> None:
    if os.path.isdir(directory):
        check_private(directory)
        return
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)   # exactly 0700, whatever the umask


def create_keys(directory: str, *, force: bool = False) -> list[str]:
    """Make ``directory`` (0700) and the server and client keypairs missing from it (all of them
    with ``force``); returns the files written. A directory that holds another head's
    ``server.key`` without its secret (a host that joins) is left alone unless ``force``."""
    _ensure_dir(directory)
    written = []
    for name in (SERVER, CLIENT):
        pub, sec = _path(directory, name), _path(directory, name, secret=True)
        if not force and os.path.exists(sec):
            continue
        if not force and name == SERVER and os.path.exists(pub):
            raise SecurityError(
                f"{pub} is another head's public key (its secret is not here): this host joins that head. To make "
                f"this host a head with keys of its own, run `jpar keys --force --dir {directory}` (the hosts that "
                "joined the old head need the new files).")
        public, secret = transport.curve_keypair()
        _write(sec, _certificate(name, public, secret))
        _write(pub, _certificate(name, public))
        written += [pub, sec]
    return written


def load_identity(directory: str, *, role: str = CLIENT, server_public: str = "") -> transport.CurveIdentity:
    """This process's CURVE identity from ``directory``: the head (``role="server"``) uses the server
    keypair, any other process the client keypair (the server's where there is none). Every key
    file in the directory is checked first, since the authenticator reads all public ones."""
    check_private(directory)
    for path in sorted(glob.glob(os.path.join(directory, "*.key")) + glob.glob(os.path.join(directory, "*.key_secret"))):
        check_private(path)
    own = SERVER if role == SERVER or not os.path.exists(_path(directory, CLIENT, secret=True)) else CLIENT
    secret_file = _path(directory, own, secret=True)
    if not os.path.exists(secret_file):
        if role == SERVER:
            raise SecurityError(f"No {os.path.basename(secret_file)} in {directory}: a head listening off loopback "
                                f"needs the cluster's keys. Run `jpar keys --dir {directory}`.")
        raise SecurityError(
            f"No client.key_secret in {directory}, so this process cannot join a head off loopback. Copy server.key, "
            f"client.key and client.key_secret from the key directory on the head's host (where `jpar keys` or "
            f"`jpar start --head --bind ...` made them) into {directory} (mode 0700, files 0600).")
    public, secret = read_certificate(secret_file)
    if not secret:
        raise SecurityError(f"{secret_file} holds no secret key. Copy it again from the head's host, or run "
                            "`jpar keys --force` there.")
    server_file = _path(directory, SERVER)
    if not server_public and os.path.exists(server_file):
        server_public = read_certificate(server_file)[0]
    return transport.CurveIdentity(public, secret, server_public, directory)


def secure_process(directory: str, *, role: str = CLIENT, server_public: str = "", insecure: bool = False) -> None:
    """Secure this process's sockets off loopback with the keys in ``directory`` (read on first
    need), or let them run in plaintext with ``insecure``."""
    transport.configure_security(lambda: load_identity(directory, role=role, server_public=server_public),
                                 insecure=insecure)


def settings(config: Config, server_public: str = "") -> dict:
    """What a child process needs to secure itself as its parent does (it travels in its setup)."""
    return {"key_dir": key_dir(config), "insecure": bool(config.insecure), "server_public": server_public}


def apply_settings(values: dict | None, role: str = CLIENT) -> None:
    """Secure this process from the :func:`settings` its parent sent (none: defaults from the environment)."""
    values = values or settings(Config.from_env())
    secure_process(values["key_dir"], role=role, server_public=values.get("server_public", ""),
                   insecure=bool(values.get("insecure")))


@dataclass(frozen=True)
class HeadKeys:
    """How a head about to start is secured: ``curve`` off loopback, the key directory, the files
    made for it now, and whether the user chose plaintext off loopback (``insecure``)."""

    curve: bool
    directory: str
    created: list = field(default_factory=list)
    insecure: bool = False


INSECURE_WARNING = ("the head listens on {host} in PLAINTEXT (--insecure / JPAR_INSECURE): anyone who can reach "
                    "that address can read the traffic and try to connect (messages stay HMAC-signed). Use this "
                    "only on a network you trust; without --insecure, connections off loopback use CurveZMQ.")


def prepare_head(config: Config) -> HeadKeys:
    """Before a head starts: off loopback, check that libzmq has CURVE, make the keys when there are
    none (as ``jpar keys`` does) and load them once, so a missing or exposed key fails here, clearly,
    not in the head's log. ``insecure`` skips all that with a warning."""
    directory = key_dir(config)
    if transport.is_loopback_endpoint(f"tcp://{config.bind_host}:0"):
        return HeadKeys(False, directory)
    if config.insecure:
        log.warning(INSECURE_WARNING.format(host=config.bind_host))
        return HeadKeys(False, directory, insecure=True)
    if not transport.curve_available():
        transport.curve_keypair()   # raises the SecurityError that says what to do
    created = [] if os.path.exists(_path(directory, SERVER, secret=True)) else create_keys(directory)
    load_identity(directory, role=SERVER)
    if created:
        log.info("made the cluster's CurveZMQ keys: %s\n%s", ", ".join(created),
                 join_instructions(directory, f"tcp://{config.bind_host}:PORT"))
    return HeadKeys(True, directory, created)


def secure_head(values: dict | None, config: Config) -> dict:
    """In the head process: secure it with the server keypair (or warn that it runs in plaintext
    off loopback); returns the settings its engines get."""
    values = values or settings(config)
    apply_settings(values, role=SERVER)
    if values.get("insecure") and not transport.is_loopback_endpoint(f"tcp://{config.bind_host}:0"):
        log.warning(INSECURE_WARNING.format(host=config.bind_host))
    return values


JOIN_FILES = ("server.key", "client.key", "client.key_secret")   # what a joining host gets: never server.key_secret


def join_files(directory: str) -> dict[str, str]:
    """The texts of the files a host that joins needs (:data:`JOIN_FILES`), read after the same checks
    a head's load makes: what the SSH launcher sends, inside the ssh channel, to every host."""
    check_private(directory)
    out = {}
    for name in JOIN_FILES:
        path = os.path.join(directory, name)
        read_certificate(path)   # private and a valid key, or a SecurityError that says what to do
        with open(path, encoding="ascii") as f:
            out[name] = f.read()
    return out


def install_join_files(directory: str, files: dict[str, str]) -> None:
    """Write :func:`join_files`' texts into ``directory`` (made 0700; files 0600, atomically) on a
    host that joins. Any other name (a server secret above all) is refused, not written."""
    extra = set(files) - set(JOIN_FILES)
    if extra:
        raise SecurityError(f"Refusing to install {sorted(extra)}: a host that joins gets only {list(JOIN_FILES)}.")
    _ensure_dir(directory)
    for name, text in files.items():
        _write(os.path.join(directory, name), text)


def join_instructions(directory: str, head: str) -> str:
    """How another host joins a head whose keys are in ``directory`` (printed by ``jpar start --head``)."""
    files = " ".join(os.path.join(directory, f) for f in ("server.key", "client.key", "client.key_secret"))
    brace = os.path.join(directory, "{server.key,client.key,client.key_secret}")
    return (f"connections off loopback use CurveZMQ with the keys in {directory}.\n"
            f"for another host to join, copy these 3 files into its key directory (~/.jpar/keys or JPAR_KEY_DIR; "
            f"mode 0700, files 0600), never the server.key_secret:\n  {files}\n"
            f"  e.g. ssh HOST 'mkdir -p -m 700 ~/.jpar/keys' && scp -p {brace} HOST:.jpar/keys/\n"
            f"then on that host: jpar start --address {head} with JPAR_CLUSTER_KEY set to the connection file's "
            f"\"key\" (or pass a copy of that file: jpar start --connection-file FILE)")
