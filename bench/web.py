"""
Web benchmark: requests/s of the office web service against nginx, and of the
admin API.

The web service (the "web" child alone: the same Site objects the server
runs, on one reactor) and a private nginx instance both serve the same
directory on loopback high ports; ApacheBench (`ab`, Debian package
apache2-utils) sends the same load to each: a 1 KB page and a 64 KB file,
a new connection per request. Then the admin API's `GET /api/v1/status` with
HTTP Basic (the argon2 check is cached for a minute, as scripts poll).

    .venv/bin/python bench/web.py [--requests 5000] [--concurrency 20]

nginx runs with its own config, pid and logs in a scratch directory,
listening only on 127.0.0.1; the system's nginx service is never started.
Debian packages: apache2-utils, nginx-light.
"""

import argparse
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

PW_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
           "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")   # admin-demo

CONF = """\
[system]
domain = bench.example
hostname = allworx
data_dir = {data}
[lan]
interface = lo
address = 192.168.2.254/24
[wan]
mode = disabled
[security]
mode = lan-only
[dns]
primary = 192.168.2.1
[web]
admin_password = {pw}
"""

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("nothing listens on 127.0.0.1:%d" % port)


def serve(conf_path, site_port, admin_port):
    """Run the web service's two sites on loopback (the benchmark's server process)."""
    from twisted.internet import reactor
    from allworx.config import load_config
    from allworx.office import Office
    from allworx.protocols.web.service import WebService
    office = Office(load_config(conf_path))
    web = WebService(office, reactor=reactor)
    reactor.listenTCP(site_port, web.public_site, interface="127.0.0.1", backlog=1024)
    reactor.listenTCP(admin_port, web.admin_site, interface="127.0.0.1", backlog=1024)
    reactor.run()


def ab(url, requests, concurrency, headers=(), dynamic=False):
    """
    Requests per second ApacheBench measured, and the requests that failed:
    no answer, a broken one, or a status other than 2xx. ab also counts an
    answer whose length differs from the first one's as failed ("Length");
    for a `dynamic` document (the API's status, whose figures change from one
    answer to the next) that is no failure, and ab is told so (-l).
    """
    argv = ["ab", "-q", "-r", "-n", str(requests), "-c", str(concurrency)]
    if dynamic:
        argv.append("-l")
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=600).stdout
    rate = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return rate, failed + (int(non2xx.group(1)) if non2xx else 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--serve", nargs=3, metavar=("CONF", "SITE_PORT", "ADMIN_PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
    for program in ("ab", "nginx"):
        if shutil.which(program) is None and not os.path.exists("/usr/sbin/" + program):
            raise SystemExit("needs %s (Debian packages apache2-utils, nginx-light)" % program)

    scratch = tempfile.mkdtemp(prefix="allworx-bench-web-")
    os.chmod(scratch, 0o755)  # nginx's workers run as www-data
    procs = []
    try:
        data = os.path.join(scratch, "data")
        site = os.path.join(data, "intranet")   # loopback is the LAN side: the intranet
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("<!DOCTYPE html><title>bench</title>" + "<p>office intranet</p>" * 45)
        with open(os.path.join(site, "file.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        conf = os.path.join(scratch, "tap.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(data=data, pw=PW_HASH))
        site_port, admin_port, nginx_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", conf,
                                       str(site_port), str(admin_port)], cwd=ROOT))
        nginx_dir = os.path.join(scratch, "nginx")
        os.makedirs(nginx_dir)
        with open(os.path.join(nginx_dir, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=nginx_dir, port=nginx_port, root=site))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-c", os.path.join(nginx_dir, "nginx.conf"),
                                       "-p", nginx_dir, "-g", "daemon off;"]))
        wait_port(site_port)
        wait_port(admin_port)
        wait_port(nginx_port)

        n, c = args.requests, args.concurrency
        print("web benchmark: %d requests, %d concurrent, new connection each (ab)" % (n, c))
        for path, label in (("/index.html", "1 KB page"), ("/file.bin", "64 KB file")):
            ab("http://127.0.0.1:%d%s" % (site_port, path), min(n, 500), c)  # warm up
            ours, our_fail = ab("http://127.0.0.1:%d%s" % (site_port, path), n, c)
            peer, peer_fail = ab("http://127.0.0.1:%d%s" % (nginx_port, path), n, c)
            print("  %-11s allworx %8.0f req/s (%d failed)   nginx %8.0f req/s (%d failed)   "
                  "ratio %.2f" % (label, ours, our_fail, peer, peer_fail, ours / peer))
        auth = "Authorization: Basic " + base64.b64encode(b"admin:admin-demo").decode()
        url = "http://127.0.0.1:%d/api/v1/status" % admin_port
        ab(url, 50, 1, [auth], dynamic=True)
        rate, failed = ab(url, n, c, [auth], dynamic=True)
        print("  admin API GET /api/v1/status (Basic, cached check): %.0f req/s (%d failed)"
              % (rate, failed))
        print("  load average %.2f %.2f %.2f" % os.getloadavg())
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
