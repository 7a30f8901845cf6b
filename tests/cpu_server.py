"""A one-client line server for the quiesce tests: `burn SECONDS` answers
`burning`, spends that much CPU time, then answers `done`; `idle` answers
`idle`.  Started by the tests under the harness's keeper, natively."""
import socket
import sys
import time

MAX_BURN = 30.0


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(4)
    conn, _ = listener.accept()
    pending = b""
    while chunk := conn.recv(4096):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.startswith(b"burn "):
                conn.sendall(b"burning\n")
                end = time.process_time() + min(float(line.split()[1]), MAX_BURN)
                while time.process_time() < end:
                    pass
                conn.sendall(b"done\n")
            else:
                conn.sendall(b"idle\n")


if __name__ == "__main__":
    main()
