#!/usr/bin/env python3
"""A client of the mover's Peer service (shmover.peer.v1) in Python grpcio.

Shows that a gRPC implementation other than the mover's own can call the
service: the stubs are generated at run time from peer.proto with
grpc_tools.protoc, and the calls go over a plaintext channel with the
metadata `authorization: Bearer <token>`.

Usage:
  peer_client.py --proto-root DIR --addr HOST:PORT --token-file FILE stat PATH
      prints {"path": ..., "size": ..., "e_tag": ...}
  peer_client.py --proto-root DIR --addr HOST:PORT --token-file FILE list PREFIX
      prints a JSON array of such objects (every List batch, in order)

--proto-root is the directory holding shmover/peer/v1/peer.proto; --out DIR
generates the stubs there (kept) instead of in a temporary directory.
A gRPC error prints `error: <StatusCode name>: <details>` on stderr and
exits 3; a failure to generate the stubs exits 2.

Needs grpcio and grpcio-tools (ensure_grpc_env.sh makes a venv with them).
Run by the Rust integration tests in tests/tests/ (cargo test -p shmover-tests).
"""

import argparse
import json
import os
import sys
import tempfile

PROTO = "shmover/peer/v1/peer.proto"


def generate_stubs(proto_root, out):
    """Generates peer_pb2.py and peer_pb2_grpc.py under out/shmover/peer/v1."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_root, PROTO),
    ])
    if rc != 0:
        print(f"error: protoc failed on {os.path.join(proto_root, PROTO)}", file=sys.stderr)
        sys.exit(2)
    # Regular packages, not namespace ones: the generated peer_pb2_grpc.py
    # imports `shmover.peer.v1.peer_pb2`, and a namespace package `shmover`
    # would lose to the module shmover.py beside this script.
    for pkg in ("shmover", "shmover/peer", "shmover/peer/v1"):
        open(os.path.join(out, pkg, "__init__.py"), "a").close()


def meta_json(meta):
    return {"path": meta.path, "size": meta.size, "e_tag": meta.e_tag}


def run(args, out):
    generate_stubs(args.proto_root, out)
    sys.path.insert(0, out)  # ahead of this script's directory (see above)
    import grpc
    from shmover.peer.v1 import peer_pb2, peer_pb2_grpc

    with open(args.token_file) as f:
        metadata = [("authorization", "Bearer " + f.read().strip())]
    with grpc.insecure_channel(args.addr) as channel:
        stub = peer_pb2_grpc.PeerStub(channel)
        try:
            if args.command == "stat":
                meta = stub.Stat(peer_pb2.StatRequest(path=args.arg),
                                 metadata=metadata, timeout=args.timeout)
                result = meta_json(meta)
            else:
                replies = stub.List(peer_pb2.ListRequest(prefix=args.arg),
                                    metadata=metadata, timeout=args.timeout)
                result = [meta_json(m) for reply in replies for m in reply.objects]
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 3
    print(json.dumps(result))
    return 0


def main():
    parser = argparse.ArgumentParser(description="Calls the mover's Peer service.")
    parser.add_argument("--proto-root", required=True,
                        help="directory holding " + PROTO)
    parser.add_argument("--addr", required=True, help="HOST:PORT, plaintext")
    parser.add_argument("--token-file", required=True,
                        help="file holding the bearer token")
    parser.add_argument("--out", help="generate the stubs here (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="deadline of the call in seconds (default 30)")
    parser.add_argument("command", choices=("stat", "list"))
    parser.add_argument("arg", metavar="PATH|PREFIX")
    args = parser.parse_args()

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        return run(args, os.path.abspath(args.out))
    with tempfile.TemporaryDirectory(prefix="peer_stubs_") as out:
        return run(args, out)


if __name__ == "__main__":
    sys.exit(main())
