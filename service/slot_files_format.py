"""The bytes of a saved slot: our own header around llama.cpp's sequence state.

llama.cpp's own slot files (llama_state_seq_save_file) carry no model identity: restoring one
made by another model, or a truncated or corrupt one, leaves it to libllama's reader, which
may misbehave. So a slot file (and an ExportSlot stream, the same bytes) is:

    magic  b"LGKVSLOT"                 8 bytes
    format version (1)                 u32, little-endian
    header length                      u32
    header                             JSON, UTF-8: model fingerprint, token count, adapters,
                                       state length and its SHA-256
    tokens                             n_tokens x i32
    state                              llama_state_seq_get_data's bytes

and everything is checked before a byte reaches libllama: magic, version, the fingerprint of
the model and KV cache types, the lengths, the token ids, and the state's digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"LGKVSLOT"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")
MAX_HEADER_BYTES = 64 << 10
_SAMPLES = 16  # chunks of the model file hashed into its fingerprint
_SAMPLE_BYTES = 64 << 10


class SlotFileError(ValueError):
    """A slot file or stream that cannot be restored here (INVALID_ARGUMENT / HTTP 400)."""


@dataclass(frozen=True)
class SlotImage:
    """A slot's cache as saved: its tokens and llama.cpp's state of its sequence."""

    tokens: tuple[int, ...]
    state: bytes
    adapters: tuple[tuple[int, float, str], ...] = ()  # (id, scale, file name) of its LoRA set


def model_fingerprint(model_path: str, facts: dict[str, Any]) -> str:
    """A digest of the model file (its size and 16 chunks spread over it: cheap for a large
    file, yet any other model or other weights differ) and of what shapes the KV state."""
    h = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
    size = os.path.getsize(model_path)
    h.update(size.to_bytes(8, "little"))
    with open(model_path, "rb") as f:
        for i in range(_SAMPLES):
            f.seek(max(0, (size - _SAMPLE_BYTES) * i // (_SAMPLES - 1)))
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


def encode(image: SlotImage, fingerprint: str) -> bytes:
    header = json.dumps({
        "model": fingerprint, "n_tokens": len(image.tokens),
        "adapters": [list(a) for a in image.adapters],
        "state_bytes": len(image.state),
        "state_sha256": hashlib.sha256(image.state).hexdigest(),
    }).encode()
    tokens = struct.pack(f"<{len(image.tokens)}i", *image.tokens)
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + tokens + image.state


@dataclass(frozen=True)
class Limits:
    """What this server can restore: its model, a slot's context, the state's bound."""

    fingerprint: str
    n_ctx_seq: int
    n_vocab: int
    max_bytes: int


def decode(data: bytes, limits: Limits) -> SlotImage:
    """The image in `data`, or SlotFileError saying why it cannot be restored here."""
    if len(data) < _PREFIX.size:
        raise SlotFileError("not a slot file: too short")
    magic, version, n_header = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SlotFileError("not a slot file made by llama-grpc-server (bad magic)")
    if version != FORMAT_VERSION:
        raise SlotFileError(f"slot file format version {version}; this server reads "
                            f"version {FORMAT_VERSION}")
    if n_header > MAX_HEADER_BYTES or _PREFIX.size + n_header > len(data):
        raise SlotFileError("corrupt slot file: bad header length")
    header = _header(data[_PREFIX.size:_PREFIX.size + n_header])
    if header["model"] != limits.fingerprint:
        raise SlotFileError("the slot file was made by another model (or other KV cache "
                            "types); it cannot be restored into this one")
    n_tokens, n_state = header["n_tokens"], header["state_bytes"]
    if not 0 <= n_tokens <= limits.n_ctx_seq:
        raise SlotFileError(f"the slot file holds {n_tokens} tokens; a slot here holds "
                            f"{limits.n_ctx_seq}")
    start = _PREFIX.size + n_header
    if n_state < 0 or start + 4 * n_tokens + n_state != len(data):
        raise SlotFileError("corrupt slot file: its length does not match its header")
    tokens = struct.unpack_from(f"<{n_tokens}i", data, start)
    if any(not 0 <= t < limits.n_vocab for t in tokens):
        raise SlotFileError("corrupt slot file: a token id outside the vocabulary")
    state = data[start + 4 * n_tokens:]
    if hashlib.sha256(state).hexdigest() != header["state_sha256"]:
        raise SlotFileError("corrupt slot file: the state's checksum does not match")
    adapters = tuple((int(i), float(s), str(name)) for i, s, name in header["adapters"])
    return SlotImage(tuple(tokens), bytes(state), adapters)


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
        ok = (isinstance(header, dict) and isinstance(header.get("model"), str)
              and isinstance(header.get("n_tokens"), int)
              and isinstance(header.get("state_bytes"), int)
              and isinstance(header.get("state_sha256"), str)
              and isinstance(header.get("adapters"), list)
              and all(isinstance(a, list) and len(a) == 3 for a in header["adapters"]))
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise SlotFileError("corrupt slot file: unreadable header")
    return dict(header)


# -- file names inside --slot-save-path ---------------------------------------------------------
MAX_NAME_BYTES = 255


def check_filename(name: str) -> None:
    """A plain file name: no directory part, no `.`/`..`, no control characters."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
            or name != name.strip()):
        raise SlotFileError("Invalid filename: a plain file name inside --slot-save-path is "
                            "expected (no directory separators, no '..', no control characters, "
                            "no leading or trailing spaces, at most 255 bytes)")


def read_file(directory: str, name: str, max_bytes: int) -> bytes:
    """The bytes of `name` in `directory`, refusing symlinks and anything but a regular file."""
    check_filename(name)
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SlotFileError(f"no slot file named {name!r}") from None
    except OSError as e:  # ELOOP: a symlink
        raise SlotFileError(f"cannot open the slot file {name!r}: it is a symbolic link or "
                            f"not readable ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SlotFileError(f"{name!r} is not a regular file")
        if st.st_size > max_bytes:
            raise SlotFileError(f"the slot file is {st.st_size} bytes, more than a slot here "
                                f"can hold ({max_bytes})")
        return f.read(max_bytes + 1)


def write_file(directory: str, name: str, data: bytes) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename over
    `name` (a rename replaces a symlink there rather than following it)."""
    check_filename(name)
    os.makedirs(directory, exist_ok=True)
    tmp = Path(directory) / f".{name[:200]}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, Path(directory) / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
