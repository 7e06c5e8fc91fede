#!/usr/bin/env python3
"""Round trips through a running mover from Python, over shmover.py.

Needs the environment:
  SHMOVER_CLIENT_LIB  path of libshmover_client.so
  MOVER_SOCKET        the running mover's control socket

Backs up 256 MiB of deterministic pseudo-random data written into the ring
slots in place, restores it and compares SHA-256 (and zlib's CRC-32, which
is independent of the mover's CRC32C); checks the smaller write paths, the
metadata, the mover's CRC32C against a pure-Python one, and the error codes.
Prints each test, the throughput, and a last line "N passed, M failed";
exits non-zero on any failure. Standard library only (unittest).

Run by tests/tests/python_binding.rs (cargo test -p shmover-tests).
"""

import hashlib
import io
import os
import random
import sys
import tempfile
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shmover  # noqa: E402

MIB = 1 << 20
BIG = 256 * MIB
SEED = 20240229
PREFIX = "python-test/%d-%d/" % (os.getpid(), int(time.time() * 1000))


def connect(**kw):
    return shmover.Client().connect(os.environ["MOVER_SOCKET"], label="test_roundtrip.py", **kw)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), bitwise-table reference; slow, small inputs only."""
    crc ^= 0xFFFFFFFF
    t = _CRC32C
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mbps(nbytes, seconds):
    return nbytes / max(seconds, 1e-9) / 1e6


def setUpModule():
    for var in ("SHMOVER_CLIENT_LIB", "MOVER_SOCKET"):
        if not os.environ.get(var):
            raise RuntimeError("%s is not set (see the docstring of %s)" % (var, __file__))
    shmover.load()


class RoundTrip(unittest.TestCase):
    def test_256_mib_round_trip_in_place_through_memoryviews(self):
        name = PREFIX + "big"
        with connect() as c:
            # Backup: each block is generated straight into the ring slot's
            # memoryview, then hashed from the slot (what the mover will read).
            sha_in, crc_in = hashlib.sha256(), 0
            rng = random.Random(SEED)
            gen = hashing = 0.0
            blocks = 0
            t0 = time.perf_counter()
            c.open_write(name, MIB, size_hint=BIG, metadata={"source": "test_roundtrip.py"})
            off = 0
            while off < BIG:
                slot = c.reserve()
                self.assertFalse(slot.readonly)
                self.assertEqual(len(slot), MIB)
                n = min(len(slot), BIG - off)
                g = time.perf_counter()
                slot[:n] = rng.randbytes(n)
                h = time.perf_counter()
                sha_in.update(slot[:n])
                crc_in = zlib.crc32(slot[:n], crc_in)
                hashing += time.perf_counter() - h
                gen += h - g
                c.commit_block(n)
                off += n
                blocks += 1
            info = c.commit()
            backup_s = time.perf_counter() - t0
            # The view of a committed slot is released, not left dangling.
            with self.assertRaises(ValueError):
                slot[0]
            self.assertEqual(blocks, BIG // MIB)
            self.assertEqual(info["name"], name)
            self.assertEqual(info["size"], BIG)
            self.assertEqual(info["block_size"], MIB)
            self.assertEqual(info["metadata"], {"source": "test_roundtrip.py"})
            self.assertGreater(info["created_ms"], 1_600_000_000_000)

            st = c.stat(name, meta_keys=["source", "absent"])
            self.assertEqual(st["size"], BIG)
            self.assertEqual(st["crc32c"], info["crc32c"])
            self.assertEqual(st["metadata"], {"source": "test_roundtrip.py"})
            listed = c.list(PREFIX)
            self.assertIn(name, [o["name"] for o in listed])
            self.assertEqual([o["size"] for o in listed if o["name"] == name], [BIG])
            self.assertEqual(len(c.list(PREFIX, limit=1)), 1)

            # Restore: hash each block straight from the ring slot.
            sha_out, crc_out = hashlib.sha256(), 0
            got = nblocks = 0
            hashing_out = 0.0
            t0 = time.perf_counter()
            self.assertEqual(c.open_read(name), BIG)
            prev = None
            for block in c.blocks():
                if prev is not None:
                    # The previous block's view was released when we moved on.
                    with self.assertRaises(ValueError):
                        prev[0]
                self.assertTrue(block.readonly)
                h = time.perf_counter()
                sha_out.update(block)
                crc_out = zlib.crc32(block, crc_out)
                hashing_out += time.perf_counter() - h
                got += len(block)
                nblocks += 1
                prev = block
            restore_s = time.perf_counter() - t0

            self.assertEqual(got, BIG)
            self.assertEqual(sha_out.hexdigest(), sha_in.hexdigest())
            self.assertEqual(crc_out, crc_in)
            print(
                "\n  sha256 %s  crc32 %08x  crc32c (mover) %08x"
                % (sha_in.hexdigest(), crc_in, info["crc32c"])
            )
            print(
                "  backup:  %d bytes in %d blocks, %.2f s = %.0f MB/s"
                " (%.0f MB/s without generating %.2f s and hashing %.2f s)"
                % (BIG, blocks, backup_s, mbps(BIG, backup_s),
                   mbps(BIG, backup_s - gen - hashing), gen, hashing)
            )
            print(
                "  restore: %d bytes in %d blocks, %.2f s = %.0f MB/s"
                " (%.0f MB/s without hashing %.2f s)"
                % (got, nblocks, restore_s, mbps(got, restore_s),
                   mbps(got, restore_s - hashing_out), hashing_out)
            )
            sys.stdout.flush()

            c.delete(name)
            with self.assertRaises(shmover.ShmoverError) as e:
                c.stat(name)
            self.assertEqual(e.exception.code, shmover.ERR_NOT_FOUND)

    def test_write_and_write_from_with_odd_blocks_metadata_and_crc32c(self):
        name = PREFIX + "small"
        rng = random.Random(SEED + 1)
        head = rng.randbytes(700_001)
        tail = rng.randbytes(1_000_003)
        meta = {"host": "db1", "unicode": "d\u00e9j\u00e0 vu", "empty": ""}
        with connect() as c, tempfile.TemporaryFile() as f:
            f.write(tail)
            f.seek(0)
            c.open_write(name, 300_000, metadata=meta)
            # Views never exceed the block size asked for, although the
            # mover's slots are rounded up to a page.
            self.assertEqual(len(c.reserve()), 300_000)
            self.assertEqual(c.write(head), len(head))
            self.assertEqual(c.write(memoryview(b"")), 0)
            self.assertEqual(c.write_from(io.BytesIO(b"0123456789"), size=4), 4)
            self.assertEqual(c.write_from(f), len(tail))
            info = c.commit()
            want = head + b"0123" + tail
            self.assertEqual(info["size"], len(want))
            self.assertEqual(info["block_size"], 300_000)
            self.assertEqual(info["metadata"], meta)
            self.assertEqual(crc32c(b"123456789"), 0xE3069283)  # the check value
            self.assertEqual(info["crc32c"], crc32c(want))

            self.assertEqual(c.open_read(name, 65_536), len(want))
            parts = [bytes(b) for b in c.blocks()]
            self.assertTrue(all(len(p) <= 65_536 for p in parts), [len(p) for p in parts])
            self.assertEqual(b"".join(parts), want)

            # A name that exists cannot be written again.
            with self.assertRaises(shmover.ShmoverError) as e:
                c.open_write(name, MIB)
            self.assertEqual(e.exception.code, shmover.ERR_ALREADY_EXISTS)
            c.delete(name)

    def test_abort_leaves_nothing_and_the_connection_is_reusable(self):
        name = PREFIX + "aborted"
        with connect() as c:
            c.open_write(name, MIB)
            c.write(bytes(3 * MIB + 5))
            c.abort("test_roundtrip.py aborts on purpose")
            with self.assertRaises(shmover.ShmoverError) as e:
                c.stat(name)
            self.assertEqual(e.exception.code, shmover.ERR_NOT_FOUND)
            c.open_write(name, MIB)
            c.write(b"second try")
            self.assertEqual(c.commit()["size"], 10)
            c.delete(name)

    def test_an_exception_in_the_with_block_aborts_the_backup(self):
        name = PREFIX + "exception"
        with self.assertRaises(ZeroDivisionError):
            with connect() as c:
                c.open_write(name, MIB)
                c.write(b"x" * 1000)
                1 / 0
        with connect() as c:
            with self.assertRaises(shmover.ShmoverError) as e:
                c.stat(name)
            self.assertEqual(e.exception.code, shmover.ERR_NOT_FOUND)

    def test_leaving_a_restore_early_closes_it(self):
        name = PREFIX + "early"
        with connect() as c:
            c.open_write(name, 64 * 1024)
            c.write(bytes(range(256)) * 4096)  # 1 MiB in 16 blocks
            c.commit()
            c.open_read(name, 64 * 1024)
            for block in c.blocks():
                self.assertEqual(bytes(block[:4]), b"\x00\x01\x02\x03")
                break
            # The generator closed the restore: the connection is idle again.
            self.assertEqual(c.stat(name)["size"], MIB)
            # A generator dropped unfinished after its restore was closed by
            # hand does not close the next restore when it is collected.
            c.open_read(name, 64 * 1024)
            old = c.blocks()
            next(old)
            c.close_read()
            c.open_read(name, 64 * 1024)
            del old
            self.assertEqual(sum(len(b) for b in c.blocks()), MIB)
            c.delete(name)

    def test_errors_carry_the_library_code_and_sentence(self):
        with connect() as c:
            with self.assertRaises(shmover.ShmoverError) as e:
                c.stat(PREFIX + "missing")
            self.assertEqual(e.exception.code, shmover.ERR_NOT_FOUND)
            self.assertIn("missing", e.exception.message)
            for bad in ("a/../b", "/abs", "a//b", ""):
                with self.assertRaises(shmover.ShmoverError, msg=bad) as e:
                    c.stat(bad)
                self.assertEqual(e.exception.code, shmover.ERR_BAD_NAME, bad)
            with self.assertRaises(shmover.ShmoverError) as e:
                c.open_write("a/../b", MIB)
            self.assertEqual(e.exception.code, shmover.ERR_BAD_NAME)
            with self.assertRaises(shmover.ShmoverError) as e:
                c.delete(PREFIX + "missing")
            self.assertEqual(e.exception.code, shmover.ERR_NOT_FOUND)
            with self.assertRaises(shmover.ShmoverError) as e:
                c.commit_block(1)
            self.assertEqual(e.exception.code, shmover.ERR_WRONG_STATE)
            with self.assertRaises(shmover.ShmoverError) as e:
                c.open_write(PREFIX + "zero", 0)
            self.assertEqual(e.exception.code, shmover.ERR_INVALID_ARGUMENT)
            self.assertEqual(c.list(PREFIX + "missing"), [])
        with self.assertRaises(shmover.ShmoverError) as e:
            shmover.Client().connect(os.environ["MOVER_SOCKET"] + ".nobody")
        self.assertEqual(e.exception.code, shmover.ERR_UNREACHABLE)
        with self.assertRaises(shmover.ShmoverError) as e:
            connect(kind=99)
        self.assertEqual(e.exception.code, shmover.ERR_INVALID_ARGUMENT)


def main():
    t0 = time.perf_counter()
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print("python tests took %.1f s" % (time.perf_counter() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
