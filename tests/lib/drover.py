"""Start and stop a live `drover serve` for black-box tests.

    with Drover(binary) as d:          # temp data dir, free port, loopback only
        d.port                          # MQTT port
    with Drover(binary, http_port=True) as d:   # also the HTTP listener (REST API, /mqtt)
        d.http_port                     # on a free port (or the port given)
        d.admin_token()                 # the platform admin token the first start printed
        d.restart()                     # SIGTERM, then start again on the same data
        d.kill9_restart()               # kill -9, then start again

Extra settings are passed as --set key=value.  The server's log is kept in
the data directory and printed if the server dies unexpectedly.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Drover:
    def __init__(self, binary, settings=None, data_dir=None, port=None, http_port=None):
        self.binary = binary
        self.settings = dict(settings or {})
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="drover-test-")
        self.port = port or free_port()
        # None: no HTTP listener (the default); True: one on a free port; an int: that port.
        self.http_port = free_port() if http_port is True else http_port
        self.proc = None
        self.log_path = os.path.join(self.data_dir, "server.log")

    def start(self):
        args = [self.binary, "serve", "--data-dir", os.path.join(self.data_dir, "data"),
                "--set", f"mqtt.listen=127.0.0.1:{self.port}", "--set", "log.format=text"]
        # Only the plain MQTT port unless a test asks for more: parallel tests must not
        # fight over the default TLS and HTTP ports.
        settings = {"mqtt.tls_listen": "", "http.listen": "", "https.listen": ""}
        if self.http_port:
            settings["http.listen"] = f"127.0.0.1:{self.http_port}"
        settings.update(self.settings)
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("drover exited at start:\n" + self.read_log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if self.http_port:
                    socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("drover did not start listening:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-8000:]
        except OSError:
            return ""

    def admin_token(self, timeout=10):
        """The platform admin token the first start printed to standard output
        (a line "    DROVER_TOKEN=drv_..."), read back from the server log."""
        deadline = time.time() + timeout
        while True:
            try:
                with open(self.log_path, "rb") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                text = ""
            m = re.search(r"^\s*DROVER_TOKEN=(drv_[A-Za-z0-9]+)\s*$", text, re.M)
            if m:
                return m.group(1)
            if time.time() > deadline:
                raise RuntimeError("no DROVER_TOKEN line in the server log:\n" + text[-4000:])
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()
        return rc

    def restart(self):
        rc = self.stop()
        if rc not in (0, None):
            raise RuntimeError(f"drover exited with {rc} on SIGTERM:\n" + self.read_log())
        return self.start()

    def kill9_restart(self):
        self.stop(signal.SIGKILL)
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        crashed = rc not in (0, None)
        if crashed or "ERROR: AddressSanitizer" in self.read_log() or "runtime error" in self.read_log():
            print(self.read_log())
            if exc[0] is None:
                raise RuntimeError(f"drover exited with {rc} or reported a sanitizer error")
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return False
