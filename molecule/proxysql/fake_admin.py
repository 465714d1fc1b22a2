#!/usr/bin/env python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for ProxySQL's admin interface, for tests (no ProxySQL binary can be installed here).

ProxySQL's admin interface is SQLite behind the MySQL protocol. This server speaks enough of the
MySQL protocol for PyMySQL (handshake v10, mysql_native_password with a real password check,
COM_QUERY text result sets, COM_PING, COM_QUIT) and executes statements in SQLite databases that
have ProxySQL 2.x's admin tables (`mysql_servers`, `mysql_query_rules`,
`mysql_query_rules_fast_routing`, `mysql_users`):

* `main.db` plays the in-memory "main" configuration;
* `LOAD MYSQL {SERVERS|QUERY RULES|USERS} TO RUNTIME` copies the tables to `runtime_*` tables,
  `SAVE ... TO DISK` copies them into `disk.db` (the "disk" database);
* any other LOAD/SAVE form or unknown admin command is an error, like on ProxySQL;
* every statement received is recorded in `history` (connection id, sequence, statement, error),
  which is what the tests inspect ("LOAD ... once per run, all in one connection").

    fake_admin.py --dir DIR --port 16032 [--user admin --password admin] [--pidfile F]

Not covered (and not claimed): ProxySQL's own SQL rewrites, runtime checks of servers, the
monitor module, clustering. Statements that are valid here are valid SQLite on the same schema.
"""

import argparse
import hashlib
import os
import re
import signal
import socketserver
import sqlite3
import struct
import sys
import threading

# ProxySQL 2.x admin table definitions (main database), as ProxySQL creates them.
SCHEMA = {
    "mysql_servers": (
        "CREATE TABLE mysql_servers (hostgroup_id INT CHECK (hostgroup_id>=0) NOT NULL DEFAULT 0 , "
        "hostname VARCHAR NOT NULL , port INT CHECK (port >= 0 AND port <= 65535) NOT NULL DEFAULT 3306 , "
        "gtid_port INT CHECK ((gtid_port <> port OR gtid_port=0) AND gtid_port >= 0 AND gtid_port <= 65535) "
        "NOT NULL DEFAULT 0 , status VARCHAR CHECK (UPPER(status) IN ('ONLINE','SHUNNED','OFFLINE_SOFT', "
        "'OFFLINE_HARD')) NOT NULL DEFAULT 'ONLINE' , weight INT CHECK (weight >= 0 AND weight <=10000000) "
        "NOT NULL DEFAULT 1 , compression INT CHECK (compression IN(0,1)) NOT NULL DEFAULT 0 , "
        "max_connections INT CHECK (max_connections >=0) NOT NULL DEFAULT 1000 , max_replication_lag INT "
        "CHECK (max_replication_lag >= 0 AND max_replication_lag <= 126144000) NOT NULL DEFAULT 0 , "
        "use_ssl INT CHECK (use_ssl IN(0,1)) NOT NULL DEFAULT 0 , max_latency_ms INT UNSIGNED CHECK "
        "(max_latency_ms>=0) NOT NULL DEFAULT 0 , comment VARCHAR NOT NULL DEFAULT '' , "
        "PRIMARY KEY (hostgroup_id, hostname, port) )"),
    "mysql_users": (
        "CREATE TABLE mysql_users (username VARCHAR NOT NULL , password VARCHAR , active INT CHECK "
        "(active IN (0,1)) NOT NULL DEFAULT 1 , use_ssl INT CHECK (use_ssl IN (0,1)) NOT NULL DEFAULT 0 , "
        "default_hostgroup INT NOT NULL DEFAULT 0 , default_schema VARCHAR , schema_locked INT CHECK "
        "(schema_locked IN (0,1)) NOT NULL DEFAULT 0 , transaction_persistent INT CHECK "
        "(transaction_persistent IN (0,1)) NOT NULL DEFAULT 1 , fast_forward INT CHECK (fast_forward IN "
        "(0,1)) NOT NULL DEFAULT 0 , backend INT CHECK (backend IN (0,1)) NOT NULL DEFAULT 1 , frontend "
        "INT CHECK (frontend IN (0,1)) NOT NULL DEFAULT 1 , max_connections INT CHECK (max_connections "
        ">=0) NOT NULL DEFAULT 10000 , attributes VARCHAR CHECK (JSON_VALID(attributes) OR attributes = "
        "'') NOT NULL DEFAULT '' , comment VARCHAR NOT NULL DEFAULT '' , PRIMARY KEY (username, backend) , "
        "UNIQUE (username, frontend))"),
    "mysql_query_rules": (
        "CREATE TABLE mysql_query_rules (rule_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL , active INT "
        "CHECK (active IN (0,1)) NOT NULL DEFAULT 0 , username VARCHAR , schemaname VARCHAR , flagIN INT "
        "CHECK (flagIN >= 0) NOT NULL DEFAULT 0 , client_addr VARCHAR , proxy_addr VARCHAR , proxy_port "
        "INT CHECK (proxy_port >= 0 AND proxy_port <= 65535), digest VARCHAR , match_digest VARCHAR , "
        "match_pattern VARCHAR , negate_match_pattern INT CHECK (negate_match_pattern IN (0,1)) NOT NULL "
        "DEFAULT 0 , re_modifiers VARCHAR DEFAULT 'CASELESS' , flagOUT INT CHECK (flagOUT >= 0), "
        "replace_pattern VARCHAR CHECK(CASE WHEN replace_pattern IS NULL THEN 1 WHEN replace_pattern IS "
        "NOT NULL AND match_pattern IS NOT NULL THEN 1 ELSE 0 END) , destination_hostgroup INT DEFAULT "
        "NULL , cache_ttl INT CHECK(cache_ttl > 0) , cache_empty_result INT CHECK (cache_empty_result IN "
        "(0,1)) DEFAULT NULL , cache_timeout INT CHECK(cache_timeout >= 0) , reconnect INT CHECK "
        "(reconnect IN (0,1)) DEFAULT NULL , timeout INT UNSIGNED CHECK (timeout >= 0) , retries INT "
        "CHECK (retries>=0 AND retries <=1000) , delay INT UNSIGNED CHECK (delay >=0) , next_query_flagIN "
        "INT UNSIGNED , mirror_flagOUT INT UNSIGNED , mirror_hostgroup INT UNSIGNED , error_msg VARCHAR , "
        "OK_msg VARCHAR , sticky_conn INT CHECK (sticky_conn IN (0,1)) , multiplex INT CHECK (multiplex "
        "IN (0,1,2)) , gtid_from_hostgroup INT UNSIGNED , log INT CHECK (log IN (0,1)) , apply INT "
        "CHECK(apply IN (0,1)) NOT NULL DEFAULT 0 , attributes VARCHAR CHECK (JSON_VALID(attributes) OR "
        "attributes = '') NOT NULL DEFAULT '' , comment VARCHAR)"),
    "mysql_query_rules_fast_routing": (
        "CREATE TABLE mysql_query_rules_fast_routing (username VARCHAR NOT NULL , schemaname VARCHAR NOT "
        "NULL , flagIN INT NOT NULL DEFAULT 0 , destination_hostgroup INT CHECK (destination_hostgroup >= "
        "0) NOT NULL , comment VARCHAR NOT NULL , PRIMARY KEY (username, schemaname, flagIN) )"),
}
# LOAD/SAVE modules and the tables each one carries.
MODULES = {
    "MYSQL SERVERS": ("mysql_servers",),
    "MYSQL QUERY RULES": ("mysql_query_rules", "mysql_query_rules_fast_routing"),
    "MYSQL USERS": ("mysql_users",),
}
LOAD_SAVE = re.compile(r"^\s*(LOAD|SAVE)\s+(MYSQL\s+SERVERS|MYSQL\s+QUERY\s+RULES|MYSQL\s+USERS)\s+"
                       r"(TO|FROM)\s+(RUNTIME|RUN|DISK|MEMORY|MEM)\s*;?\s*$", re.I)
HISTORY = ("CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, conn INT NOT NULL, "
           "seq INT NOT NULL, statement TEXT NOT NULL, error TEXT)")

CLIENT_LONG_PASSWORD = 1
CLIENT_CONNECT_WITH_DB = 8
CLIENT_PROTOCOL_41 = 512
CLIENT_TRANSACTIONS = 8192
CLIENT_SECURE_CONNECTION = 32768
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_PLUGIN_AUTH_LENENC = 1 << 21
SERVER_CAPS = (CLIENT_LONG_PASSWORD | CLIENT_CONNECT_WITH_DB | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
               | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_RESULTS | CLIENT_PLUGIN_AUTH | CLIENT_PLUGIN_AUTH_LENENC)
STATUS_AUTOCOMMIT = 2


def create_databases(directory):
    """main.db (with runtime_* tables and history) and disk.db, each with the admin tables."""
    os.makedirs(directory, exist_ok=True)
    for name in ("main.db", "disk.db"):
        conn = sqlite3.connect(os.path.join(directory, name))
        for table, ddl in SCHEMA.items():
            conn.execute(ddl.replace("CREATE TABLE " + table, "CREATE TABLE IF NOT EXISTS " + table, 1))
            if name == "main.db":
                conn.execute(ddl.replace("CREATE TABLE " + table, "CREATE TABLE IF NOT EXISTS runtime_" + table, 1))
        if name == "main.db":
            conn.execute(HISTORY)
        conn.commit()
        conn.close()


def lenenc_int(value):
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + struct.pack("<I", value)[:3]
    return b"\xfe" + struct.pack("<Q", value)


def lenenc_str(data):
    if data is None:
        return b"\xfb"
    if not isinstance(data, bytes):
        data = str(data).encode("utf-8")
    return lenenc_int(len(data)) + data


def scramble_ok(password, salt, token):
    if not password:
        return token == b""
    stage1 = hashlib.sha1(password.encode()).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(salt + stage2).digest()
    expected = bytes(a ^ b for a, b in zip(stage1, mix))
    return token == expected


class AdminHandler(socketserver.BaseRequestHandler):
    """One client connection."""

    counter = 0
    counter_lock = threading.Lock()

    def setup(self):
        with AdminHandler.counter_lock:
            AdminHandler.counter += 1
            self.conn_id = AdminHandler.counter
        self.seq = 0
        self.statement_no = 0
        self.buffer = b""

    # packets
    def read_packet(self):
        header = self._read(4)
        if header is None:
            return None
        length = header[0] | header[1] << 8 | header[2] << 16
        self.seq = (header[3] + 1) & 0xFF
        return self._read(length)

    def _read(self, size):
        while len(self.buffer) < size:
            chunk = self.request.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, payload):
        while True:
            part, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
            self.request.sendall(struct.pack("<I", len(part))[:3] + bytes([self.seq]) + part)
            self.seq = (self.seq + 1) & 0xFF
            if len(part) < 0xFFFFFF:
                return

    def ok(self, affected=0):
        self.send(b"\x00" + lenenc_int(affected) + lenenc_int(0) + struct.pack("<HH", STATUS_AUTOCOMMIT, 0))

    def error(self, errno, message, state="HY000"):
        self.send(b"\xff" + struct.pack("<H", errno) + b"#" + state.encode() + message.encode("utf-8", "replace"))

    def eof(self):
        self.send(b"\xfe" + struct.pack("<HH", 0, STATUS_AUTOCOMMIT))

    def result(self, names, rows):
        self.send(lenenc_int(len(names)))
        for name in names:
            self.send(lenenc_str("def") + lenenc_str("") + lenenc_str("") + lenenc_str("") + lenenc_str(name)
                      + lenenc_str(name) + b"\x0c" + struct.pack("<HIBHB", 33, 1024, 0xFD, 0, 0) + b"\x00\x00")
        self.eof()
        for row in rows:
            self.send(b"".join(lenenc_str(None if value is None else str(value)) for value in row))
        self.eof()

    # protocol
    def handle(self):
        server = self.server
        salt = os.urandom(20).replace(b"\x00", b"\x01")
        self.seq = 0
        self.send(b"\x0a" + b"5.5.30 (ProxySQL Admin Module, edgefleet test stand-in)\x00"
                  + struct.pack("<I", self.conn_id) + salt[:8] + b"\x00"
                  + struct.pack("<H", SERVER_CAPS & 0xFFFF) + bytes([33]) + struct.pack("<H", STATUS_AUTOCOMMIT)
                  + struct.pack("<H", SERVER_CAPS >> 16) + bytes([21]) + b"\x00" * 10 + salt[8:] + b"\x00"
                  + b"mysql_native_password\x00")
        response = self.read_packet()
        if response is None:
            return
        caps = struct.unpack("<I", response[:4])[0]
        pos = 32
        end = response.index(b"\x00", pos)
        user = response[pos:end].decode()
        pos = end + 1
        if caps & CLIENT_PLUGIN_AUTH_LENENC:
            length = response[pos]
            pos += 1
        else:
            length = response[pos]
            pos += 1
        token = response[pos:pos + length]
        if user != server.admin_user or not scramble_ok(server.admin_password, salt, token):
            self.error(1045, "ProxySQL Error: Access denied for user '%s'" % user, "28000")
            return
        self.ok()
        db = sqlite3.connect(os.path.join(server.directory, "main.db"), timeout=30, isolation_level=None)
        db.execute("ATTACH DATABASE ? AS disk", (os.path.join(server.directory, "disk.db"),))
        try:
            while True:
                packet = self.read_packet()
                if packet is None or packet[:1] == b"\x01":
                    return
                command = packet[0]
                if command == 0x0E or command == 0x02:  # ping, init db
                    self.ok()
                    continue
                if command != 0x03:
                    self.error(1047, "Unknown command")
                    continue
                self.query(db, packet[1:].decode("utf-8", "replace"))
        finally:
            db.close()

    def query(self, db, sql):
        self.statement_no += 1
        error = None
        with self.server.lock:
            try:
                self.execute(db, sql)
            except sqlite3.Error as exc:
                error = str(exc)
                self.error(1045, "ProxySQL Admin Error: %s" % exc)
            except ValueError as exc:
                error = str(exc)
                self.error(1045, "ProxySQL Admin Error: %s" % exc)
            db.execute("INSERT INTO history (conn, seq, statement, error) VALUES (?, ?, ?, ?)",
                       (self.conn_id, self.statement_no, sql, error))

    def execute(self, db, sql):
        stripped = sql.strip().rstrip(";").strip()
        upper = stripped.upper()
        if upper.startswith("SET ") or upper in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.ok()
            return
        if upper.startswith("SELECT VERSION()") or upper.startswith("SELECT @@VERSION"):
            self.result(["version"], [["2.5.5-fake"]])
            return
        if upper.startswith(("LOAD ", "SAVE ")):
            match = LOAD_SAVE.match(stripped)
            if not match:
                raise ValueError("near \"%s\": syntax error" % stripped.split()[0])
            verb, module, direction, where = (g.upper() for g in match.groups())
            module = re.sub(r"\s+", " ", module)
            tables = MODULES[module]
            if verb == "LOAD" and direction == "TO" and where in ("RUNTIME", "RUN"):
                pairs = [(t, "runtime_" + t) for t in tables]
            elif verb == "SAVE" and direction == "TO" and where == "DISK":
                pairs = [(t, "disk." + t) for t in tables]
            elif verb == "LOAD" and direction == "FROM" and where == "DISK":
                pairs = [("disk." + t, t) for t in tables]
            elif verb == "SAVE" and direction == "FROM" and where in ("RUNTIME", "RUN"):
                pairs = [("runtime_" + t, t) for t in tables]
            else:
                raise ValueError("unsupported form: %s" % stripped)
            db.execute("BEGIN")
            for source, target in pairs:
                db.execute("DELETE FROM %s" % target)
                db.execute("INSERT INTO %s SELECT * FROM %s" % (target, source))
            db.execute("COMMIT")
            self.ok()
            return
        cursor = db.execute(stripped)
        if cursor.description:
            names = [col[0] for col in cursor.description]
            self.result(names, cursor.fetchall())
        else:
            self.ok(max(cursor.rowcount, 0))


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=16032)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--pidfile")
    args = parser.parse_args()
    create_databases(args.dir)
    server = Server((args.host, args.port), AdminHandler)
    server.directory = args.dir
    server.admin_user = args.user
    server.admin_password = args.password
    server.lock = threading.Lock()
    if args.pidfile:
        with open(args.pidfile, "w", encoding="utf-8") as handle:
            handle.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if args.pidfile and os.path.exists(args.pidfile):
            os.unlink(args.pidfile)


if __name__ == "__main__":
    main()
