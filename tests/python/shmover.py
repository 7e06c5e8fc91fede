"""shmover: a small Python binding of the shmover client's C ABI.

Pure standard library (``ctypes``); it loads ``libshmover_client.so`` (built
by ``cargo build -p shmover-client``) and wraps the functions declared in
``shim-c/include/shmover_client.h``.

The write path is zero-copy on the binding's side: :meth:`Client.reserve`
returns a writable :class:`memoryview` onto the ring slot itself, in the
shared memory the mover reads, so whatever fills it (``slot[:n] = data``,
``fileobj.readinto(slot)``, ``hashlib`` over it afterwards) touches the ring
directly. Restores likewise yield read-only views onto the ring's slots.

Example::

    import shmover

    with shmover.Client().connect("/run/shmover/mover.sock") as c:
        c.open_write("db1/piece-1", 1 << 20, metadata={"host": "db1"})
        with open("/backups/piece-1", "rb") as f:
            c.write_from(f)                 # read(2) lands in the ring slots
        info = c.commit()                   # durable now
        size = c.open_read("db1/piece-1")
        with open("/tmp/piece-1", "wb") as out:
            for block in c.blocks():        # views onto the ring's slots
                out.write(block)

Lifetime rules (they follow from zero-copy; breaking them is undefined
behaviour, exactly as in C):

- A view from :meth:`Client.reserve` is valid until the next call on the
  client; :meth:`Client.commit_block`, :meth:`Client.commit`,
  :meth:`Client.abort` and :meth:`Client.close` release it, after which
  using it raises ``ValueError``.
- A view yielded by :meth:`Client.blocks` is valid until the consumer asks
  for the next block (or leaves the loop); then it is released.
- Slices taken from such a view (``view[10:20]``) are *not* released with
  it: do not keep them. Copy (``bytes(view)``) what must outlive the block.

One :class:`Client` may be used by one thread at a time (the library's
rule); calls into the library release the GIL, so clients in different
threads run in parallel.

The library is found from, in order: the ``lib`` argument of
:class:`Client` or :func:`load`, the ``SHMOVER_CLIENT_LIB`` environment
variable, then the dynamic linker's search for ``libshmover_client.so``.
"""

import ctypes
import os

__all__ = [
    "Client",
    "ShmoverError",
    "load",
    "KINDS",
    "OK",
    "END",
    "ERR_BAD_FRAME",
    "ERR_UNSUPPORTED_VERSION",
    "ERR_NOT_ALLOWED",
    "ERR_BAD_NAME",
    "ERR_NOT_FOUND",
    "ERR_ALREADY_EXISTS",
    "ERR_WRONG_STATE",
    "ERR_STORE",
    "ERR_RING",
    "ERR_RESOURCE",
    "ERR_INVALID_ARGUMENT",
    "ERR_CHECKSUM",
    "ERR_SIZE_MISMATCH",
    "ERR_INTERNAL",
    "ERR_UNREACHABLE",
    "ERR_DISCONNECTED",
    "ERR_PROTOCOL",
    "ERR_TIMEOUT",
    "ERR_IO",
]

# Client kinds: each has its own name space in the store.
KINDS = {"generic": 1, "sbt": 2, "backint": 3}

# Return codes of shmover_client.h. 0 is success; END is not an error.
OK = 0
ERR_BAD_FRAME = 1
ERR_UNSUPPORTED_VERSION = 2
ERR_NOT_ALLOWED = 3
ERR_BAD_NAME = 4
ERR_NOT_FOUND = 5
ERR_ALREADY_EXISTS = 6
ERR_WRONG_STATE = 7
ERR_STORE = 8
ERR_RING = 9
ERR_RESOURCE = 10
ERR_INVALID_ARGUMENT = 11
ERR_CHECKSUM = 12
ERR_SIZE_MISMATCH = 13
ERR_INTERNAL = 14
ERR_UNREACHABLE = 101
ERR_DISCONNECTED = 102
ERR_PROTOCOL = 103
ERR_TIMEOUT = 104
ERR_IO = 105
END = 1000


class ShmoverError(Exception):
    """A call failed: ``code`` is one of the ``ERR_*`` numbers, ``message``
    the library's sentence (``shmover_last_error``)."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s (shmover error %d)" % (self.message, self.code)


# Opaque handle types, so ctypes refuses to mix them up.
class _ClientT(ctypes.Structure):
    pass


class _InfoT(ctypes.Structure):
    pass


class _ListT(ctypes.Structure):
    pass


_ClientP = ctypes.POINTER(_ClientT)
_InfoP = ctypes.POINTER(_InfoT)
_ListP = ctypes.POINTER(_ListT)

_c_int = ctypes.c_int
_c_size = ctypes.c_size_t
_c_str = ctypes.c_char_p
_c_u32 = ctypes.c_uint32
_c_u64 = ctypes.c_uint64
_p_void = ctypes.POINTER(ctypes.c_void_p)

# name: (restype, argtypes), exactly as in shmover_client.h.
_PROTOTYPES = {
    "shmover_connect": (_c_int, [_c_str, _c_int, _c_str, _c_int, ctypes.POINTER(_ClientP)]),
    "shmover_disconnect": (None, [_ClientP]),
    "shmover_last_error_code": (_c_int, [_ClientP]),
    "shmover_last_error": (_c_str, [_ClientP]),
    "shmover_open_write": (_c_int, [_ClientP, _c_str, _c_size, _c_u64, ctypes.POINTER(_c_str)]),
    "shmover_reserve": (_c_int, [_ClientP, _p_void, ctypes.POINTER(_c_size)]),
    "shmover_commit_block": (_c_int, [_ClientP, _c_size]),
    "shmover_commit": (_c_int, [_ClientP, ctypes.POINTER(_InfoP)]),
    "shmover_abort": (_c_int, [_ClientP, _c_str]),
    "shmover_open_read": (_c_int, [_ClientP, _c_str, _c_size, ctypes.POINTER(_c_u64)]),
    "shmover_read_next": (_c_int, [_ClientP, _p_void, ctypes.POINTER(_c_size)]),
    "shmover_read_release": (_c_int, [_ClientP]),
    "shmover_close_read": (_c_int, [_ClientP]),
    "shmover_stat": (_c_int, [_ClientP, _c_str, ctypes.POINTER(_InfoP)]),
    "shmover_list": (_c_int, [_ClientP, _c_str, _c_u32, ctypes.POINTER(_ListP)]),
    "shmover_delete": (_c_int, [_ClientP, _c_str]),
    "shmover_list_len": (_c_size, [_ListP]),
    "shmover_list_get": (_InfoP, [_ListP, _c_size]),
    "shmover_list_free": (None, [_ListP]),
    "shmover_info_free": (None, [_InfoP]),
    "shmover_info_name": (_c_str, [_InfoP]),
    "shmover_info_size": (_c_u64, [_InfoP]),
    "shmover_info_created_ms": (ctypes.c_int64, [_InfoP]),
    "shmover_info_block_size": (_c_u32, [_InfoP]),
    "shmover_info_crc32c": (_c_u32, [_InfoP]),
    "shmover_info_meta": (_c_str, [_InfoP, _c_str]),
}

_loaded = {}


def load(lib=None):
    """Loads the client library (once per path) and declares every
    function's argument and result types. ``lib``: a path, or None for
    ``$SHMOVER_CLIENT_LIB``, else ``libshmover_client.so`` from the dynamic
    linker's search path. Returns the ``ctypes.CDLL``."""
    path = lib or os.environ.get("SHMOVER_CLIENT_LIB") or "libshmover_client.so"
    path = os.fspath(path)
    cdll = _loaded.get(path)
    if cdll is None:
        cdll = ctypes.CDLL(path)  # CDLL: the GIL is released during calls
        for name, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(cdll, name)
            f.restype = restype
            f.argtypes = argtypes
        _loaded[path] = cdll
    return cdll


def _enc(s, what):
    if isinstance(s, bytes):
        b = s
    elif isinstance(s, str):
        b = s.encode("utf-8")
    else:
        raise TypeError("%s must be str or bytes, not %s" % (what, type(s).__name__))
    if b"\0" in b:
        raise ValueError("%s contains a NUL character" % what)
    return b


def _dec(b):
    return None if b is None else b.decode("utf-8", "replace")


def _info_dict(lib, p, meta_keys=()):
    """Copies an info handle into a dict (the handle is not freed here).

    The C ABI can look metadata up only by key, so ``metadata`` holds the
    keys of ``meta_keys`` that the object has."""
    meta = {}
    for k in meta_keys:
        v = lib.shmover_info_meta(p, _enc(k, "metadata key"))
        if v is not None:
            meta[k] = _dec(v)
    return {
        "name": _dec(lib.shmover_info_name(p)),
        "size": lib.shmover_info_size(p),
        "created_ms": lib.shmover_info_created_ms(p),
        "block_size": lib.shmover_info_block_size(p),
        "crc32c": lib.shmover_info_crc32c(p),
        "metadata": meta,
    }


class Client:
    """A connection to the mover, carrying one stream at a time.

    Use as a context manager: leaving the block disconnects (which aborts
    an open backup; an exception leaving the block aborts it with the
    exception's name as the reason)."""

    def __init__(self, lib=None):
        self._lib = lib if isinstance(lib, ctypes.CDLL) else load(lib)
        self._h = None
        self._block_size = 0  # of the open backup, to bound slot views
        self._meta_keys = ()  # of the open backup, to read them back at commit
        self._writing = False
        self._slot = None  # (ctypes array, memoryview) of the reserved slot
        self._block = None  # (ctypes array, memoryview, read-only view)
        self._reading = None  # token of the open restore, for blocks()

    # -- connection -------------------------------------------------------

    def connect(self, socket=None, kind="generic", label="python", timeout_ms=0):
        """Connects to the mover at ``socket`` (None: ``$MOVER_SOCKET``,
        else the default path). ``kind``: "generic", "sbt", "backint" or
        its number. ``timeout_ms`` <= 0: the library's default (60 s or
        ``$MOVER_TIMEOUT`` seconds). Returns self."""
        if self._h is not None:
            raise ShmoverError(ERR_WRONG_STATE, "connect: this client is already connected")
        k = KINDS.get(kind, kind) if isinstance(kind, str) else int(kind)
        if not isinstance(k, int):
            raise ValueError("unknown client kind %r" % (kind,))
        sock = None if socket is None else _enc(os.fspath(socket), "socket path")
        lab = None if label is None else _enc(label, "label")
        h = _ClientP()
        rc = self._lib.shmover_connect(sock, k, lab, int(timeout_ms), ctypes.byref(h))
        if rc != OK:
            # On failure the library still hands back a handle holding the
            # error: read it, then free the handle.
            msg = _dec(self._lib.shmover_last_error(h))
            self._lib.shmover_disconnect(h)
            raise ShmoverError(rc, msg)
        self._h = h
        return self

    def close(self):
        """Disconnects (aborting an open backup) and frees the handle.
        Idempotent."""
        self._drop_views()
        h, self._h = self._h, None
        self._writing = False
        self._reading = None
        if h is not None:
            self._lib.shmover_disconnect(h)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self._writing and self._h is not None:
            try:
                self.abort("python exception: %s" % exc_type.__name__)
            except ShmoverError:
                pass  # disconnecting aborts it anyway
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _check(self, rc):
        if rc != OK:
            msg = self._lib.shmover_last_error(self._h)
            raise ShmoverError(rc, _dec(msg))

    # -- zero-copy views --------------------------------------------------

    def _drop_slot(self):
        if self._slot is not None:
            _, view = self._slot
            self._slot = None
            try:
                view.release()
            except BufferError:
                pass  # the caller holds an export of it (e.g. numpy)

    def _drop_block(self):
        if self._block is not None:
            _, view, ro = self._block
            self._block = None
            for v in (ro, view):
                try:
                    v.release()
                except BufferError:
                    pass

    def _drop_views(self):
        self._drop_slot()
        self._drop_block()

    @staticmethod
    def _view(ptr, n):
        arr = (ctypes.c_char * n).from_address(ptr)  # no copy: the ring itself
        return arr, memoryview(arr).cast("B")

    # -- backup -----------------------------------------------------------

    def open_write(self, name, block_size, size_hint=0, metadata=None):
        """Starts a backup of ``name`` in blocks of at most ``block_size``
        bytes. ``size_hint``: expected size or 0. ``metadata``: a dict of
        str to str stored with the object."""
        keys = []
        arr = None
        if metadata:
            items = []
            for k, v in metadata.items():
                items.append(_enc(k, "metadata key"))
                items.append(_enc(v, "metadata value"))
                keys.append(k)
            items.append(None)
            arr = (_c_str * len(items))(*items)
        self._check(
            self._lib.shmover_open_write(
                self._h, _enc(name, "name"), int(block_size), int(size_hint), arr
            )
        )
        self._writing = True
        self._block_size = int(block_size)
        self._meta_keys = tuple(keys)

    def reserve(self):
        """Waits for a free ring slot and returns a writable memoryview
        (format "B") onto it, at most ``block_size`` bytes long. Fill a
        prefix of it, then :meth:`commit_block` with the length filled.
        Reserving again before committing returns the same slot."""
        self._drop_slot()
        buf = ctypes.c_void_p()
        cap = _c_size()
        self._check(self._lib.shmover_reserve(self._h, ctypes.byref(buf), ctypes.byref(cap)))
        # The library returns the whole slot, which the mover rounds up to
        # a page; offer only the block size asked for.
        n = min(cap.value, self._block_size) if self._block_size else cap.value
        self._slot = self._view(buf.value, n)
        return self._slot[1]

    def commit_block(self, n):
        """Publishes the first ``n`` bytes of the reserved slot as one block
        (0: nothing; the slot stays reserved). Releases the slot's view."""
        if n < 0 or (self._slot is not None and n > len(self._slot[1])):
            raise ShmoverError(
                ERR_INVALID_ARGUMENT,
                "commit_block: %d bytes do not fit the reserved slot" % n,
            )
        self._check(self._lib.shmover_commit_block(self._h, int(n)))
        if n:
            self._drop_slot()

    def write(self, data):
        """Copies a bytes-like object into the backup, straight into the
        ring slots through their views. Returns the number of bytes."""
        src = memoryview(data).cast("B")
        total = len(src)
        off = 0
        while off < total:
            slot = self.reserve()
            n = min(len(slot), total - off)
            slot[:n] = src[off : off + n]
            self.commit_block(n)
            off += n
        return total

    def write_from(self, fileobj, size=None):
        """Copies a binary file object into the backup with
        ``fileobj.readinto(slot)``, so the data lands in the ring slot
        directly (for a raw or buffered file, one read(2) per slot). Fills
        each slot before committing it. ``size``: stop after that many bytes
        (None: at end of file). Returns the number of bytes."""
        total = 0
        while size is None or total < size:
            slot = self.reserve()
            room = len(slot) if size is None else min(len(slot), size - total)
            filled = 0
            while filled < room:
                got = fileobj.readinto(slot[filled:room])
                if got is None:
                    raise ShmoverError(
                        ERR_IO, "write_from: the file is non-blocking and has no data now"
                    )
                if got == 0:
                    break
                filled += got
            if filled:
                self.commit_block(filled)
                total += filled
            if filled < room:
                break  # end of file
        return total

    def commit(self):
        """Ends the backup and waits until it is durable. Returns its info
        dict (name, size, created_ms, block_size, crc32c, metadata)."""
        self._drop_slot()
        p = _InfoP()
        try:
            self._check(self._lib.shmover_commit(self._h, ctypes.byref(p)))
        finally:
            self._writing = False
        try:
            return _info_dict(self._lib, p, self._meta_keys)
        finally:
            self._lib.shmover_info_free(p)

    def abort(self, reason="aborted by the client"):
        """Abandons the open backup: nothing of it becomes visible."""
        self._drop_slot()
        self._writing = False
        self._check(
            self._lib.shmover_abort(self._h, None if reason is None else _enc(reason, "reason"))
        )

    # -- restore ----------------------------------------------------------

    def open_read(self, name, block_size=0):
        """Starts a restore of ``name`` (``block_size`` 0: the mover's
        default). Returns the object's size."""
        size = _c_u64()
        self._check(
            self._lib.shmover_open_read(
                self._h, _enc(name, "name"), int(block_size), ctypes.byref(size)
            )
        )
        self._reading = object()  # identifies this restore to blocks()
        return size.value

    def blocks(self):
        """Yields each block of the open restore as a read-only memoryview
        onto the ring slot; the slot is released when the consumer asks for
        the next block. The restore is closed at the end, or when the loop
        is left early (a generator dropped unfinished closes its restore
        when it is collected, never a later one)."""
        lib = self._lib
        mine = self._reading
        buf = ctypes.c_void_p()
        n = _c_size()
        failed = True
        try:
            while True:
                if mine is None or self._reading is not mine:
                    raise ShmoverError(
                        ERR_WRONG_STATE, "blocks: this restore is not open on the client"
                    )
                # self._h is read afresh on every call: close() may have
                # freed the handle while the generator was suspended.
                rc = lib.shmover_read_next(self._h, ctypes.byref(buf), ctypes.byref(n))
                if rc == END:
                    break
                self._check(rc)
                arr, view = self._view(buf.value, n.value)
                ro = view.toreadonly()
                self._block = (arr, view, ro)
                yield ro
                self._drop_block()
                self._check(lib.shmover_read_release(self._h))
            failed = False
        finally:
            if mine is not None and self._reading is mine:
                self._drop_block()
                self._reading = None
                if self._h is not None:
                    rc = lib.shmover_close_read(self._h)
                    if not failed:
                        self._check(rc)

    def close_read(self):
        """Ends the open restore, at its end or early (:meth:`blocks` does
        it for you)."""
        self._drop_block()
        self._reading = None
        self._check(self._lib.shmover_close_read(self._h))

    # -- catalog ----------------------------------------------------------

    def stat(self, name, meta_keys=()):
        """The info dict of ``name``. The C ABI has no way to enumerate
        metadata, so ``metadata`` holds only the keys of ``meta_keys``."""
        p = _InfoP()
        self._check(self._lib.shmover_stat(self._h, _enc(name, "name"), ctypes.byref(p)))
        try:
            return _info_dict(self._lib, p, meta_keys)
        finally:
            self._lib.shmover_info_free(p)

    def list(self, prefix="", limit=0, meta_keys=()):
        """Info dicts of the objects whose names start with ``prefix``,
        newest first, at most ``limit`` (0: all)."""
        p = _ListP()
        self._check(
            self._lib.shmover_list(
                self._h, _enc(prefix or "", "prefix"), int(limit), ctypes.byref(p)
            )
        )
        try:
            lib = self._lib
            return [
                _info_dict(lib, lib.shmover_list_get(p, i), meta_keys)
                for i in range(lib.shmover_list_len(p))
            ]
        finally:
            self._lib.shmover_list_free(p)

    def delete(self, name):
        """Deletes ``name``."""
        self._check(self._lib.shmover_delete(self._h, _enc(name, "name")))
