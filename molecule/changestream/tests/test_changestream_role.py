"""changestream role on the lab's cloud01: services active, every listener of the broker on loopback,
guest gone, AMQPS verified against the role's CA while plain AMQP and a wrong password are refused,
a consumer read-only on its queue, and rows written on both devices arriving as events (the probe
consumer's queue) and in the central fan-in table, equal per device to the device's own table."""
import json
import os
import time
import uuid

from tests.support.lab import devices, lab_host, sql

CLOUD = "cloud01"
VENV_PYTHON = "/usr/local/lib/edgefleet-changestream/venv/bin/python"
CENTRAL_SOCKET = "/run/edgefleet-changestream-central/mysqld.sock"
CA = "/etc/rabbitmq/tls/ca.crt"

# Runs on cloud01 with the programs' virtualenv: connect with the given user/password over AMQPS
# (or plain AMQP on 5672) and report what happened as JSON.
PROBE = r'''
import json, ssl, sys
import pika, pika.exceptions
user, password, mode, queue = sys.argv[1:5]
creds = pika.PlainCredentials(user, password)
if mode == "plain":
    params = pika.ConnectionParameters("127.0.0.1", 5672, "edgefleet", creds, connection_attempts=1, socket_timeout=5)
else:
    context = ssl.create_default_context(cafile="%s")
    params = pika.ConnectionParameters("127.0.0.1", 5671, "edgefleet", creds, connection_attempts=1, socket_timeout=5,
                                       ssl_options=pika.SSLOptions(context, "127.0.0.1"))
try:
    conn = pika.BlockingConnection(params)
except pika.exceptions.ProbableAuthenticationError as exc:
    print(json.dumps({"result": "auth refused"})); sys.exit()
except pika.exceptions.AMQPConnectionError as exc:
    print(json.dumps({"result": "connection failed", "error": repr(exc)})); sys.exit()
out = {"result": "connected", "bodies": []}
channel = conn.channel()
if mode == "consume":
    for _ in range(10000):
        method, props, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        out["bodies"].append({"id": props.message_id, "body": json.loads(body)})
    channel.close()
elif mode == "declare":
    try:
        channel.queue_declare("edgefleet.intruder", durable=True)
        out["declare"] = "allowed"
    except pika.exceptions.ChannelClosedByBroker as exc:
        out["declare"] = "refused %%d" %% exc.reply_code
conn.close()
print(json.dumps(out))
''' % CA


def cloud():
    return lab_host(CLOUD)


def config(name):
    return json.loads(cloud().check_output("cat /etc/edgefleet/changestream/%s", name))


def probe(user, password, mode, queue="-"):
    host = cloud()
    host.check_output("cat > /tmp/changestream-probe.py <<'PROBE_EOF'\n%s\nPROBE_EOF" % PROBE)
    return json.loads(host.check_output("%s /tmp/changestream-probe.py %s %s %s %s",
                                        VENV_PYTHON, user, password, mode, queue))


def capture_instances():
    out = cloud().check_output("ls /etc/edgefleet/changestream")
    return sorted(name[len("capture-"):-len(".json")] for name in out.split() if name.startswith("capture-"))


def test_services_active_and_enabled():
    host = cloud()
    instances = capture_instances()
    assert instances, "no capture configuration on cloud01"
    units = ["rabbitmq-server", "edgefleet-changestream-fanin", "edgefleet-changestream-central"]
    units += ["edgefleet-changestream-capture@%s" % name for name in instances]
    for unit in units:
        service = host.service(unit)
        assert service.is_running and service.is_enabled, unit


def test_broker_listens_on_loopback_only():
    host = cloud()
    listening = host.check_output("ss -Hltnp")
    # The broker's processes (beam.smp, epmd, systemd holding epmd's socket) and the ports it could use.
    broker = [line.split() for line in listening.splitlines()
              if any(word in line for word in ('beam', 'epmd', 'erl_child'))
              or line.split()[3].rsplit(":", 1)[1] in ('4369', '5671', '5672', '15672', '15692', '25672')]
    addresses = sorted(fields[3] for fields in broker)
    assert all(address.startswith("127.0.0.1:") for address in addresses), listening
    ports = set(int(address.rsplit(":", 1)[1]) for address in addresses)
    assert {5671, 4369, 25672} <= ports, listening
    # no plain AMQP, no management listener
    assert 5672 not in ports and 15672 not in ports, addresses
    # the central instance has no TCP listener (socket only)
    assert "mariadbd" not in "".join(line for line in listening.splitlines() if ":3390" in line)


def test_guest_gone_vhost_and_policies():
    host = cloud()
    users = host.check_output("rabbitmqctl -q list_users --formatter json")
    names = sorted(user["user"] for user in json.loads(users))
    assert "guest" not in names
    assert {"edgefleet-capture", "edgefleet-fanin", "edgefleet-probe"} <= set(names), names
    policies = {p["name"]: p for p in json.loads(host.check_output(
        "rabbitmqctl -q list_policies -p edgefleet --formatter json"))}
    stream = json.loads(policies["edgefleet-stream"]["definition"]) if isinstance(
        policies["edgefleet-stream"]["definition"], str) else policies["edgefleet-stream"]["definition"]
    assert stream == {"message-ttl": 86400000, "max-length": 100000, "dead-letter-exchange": "edgefleet.dead"}
    queues = {q["name"]: q for q in json.loads(host.check_output(
        "rabbitmqctl -q list_queues -p edgefleet name policy --formatter json"))}
    assert queues["edgefleet.fanin"]["policy"] == "edgefleet-stream"
    events = json.loads(policies["edgefleet-events"]["definition"]) if isinstance(
        policies["edgefleet-events"]["definition"], str) else policies["edgefleet-events"]["definition"]
    assert events == {"message-ttl": 86400000, "max-length": 100000}
    assert queues["edgefleet.events"]["policy"] == "edgefleet-events"
    assert queues["edgefleet.dead"]["policy"] == "edgefleet-dead"


def test_configs_and_keys_private():
    host = cloud()
    for path in ["/etc/edgefleet/changestream/fanin.json"] + [
            "/etc/edgefleet/changestream/capture-%s.json" % name for name in capture_instances()]:
        item = host.file(path)
        assert (item.user, item.group, item.mode) == ("root", "edgefleet-changestream", 0o640), path
    key = host.file("/etc/rabbitmq/tls/server.key")
    assert (key.user, key.group, key.mode) == ("root", "rabbitmq", 0o640)
    assert host.file("/etc/rabbitmq/tls/ca.key").mode == 0o600


def test_tls_verified_plain_refused_wrong_password_refused():
    fanin = config("fanin.json")["broker"]
    assert probe(fanin["user"], fanin["password"], "tls")["result"] == "connected"
    assert probe(fanin["user"], fanin["password"], "plain")["result"] == "connection failed"
    assert probe(fanin["user"], fanin["password"] + "x", "tls")["result"] == "auth refused"
    # The certificate verifies against the role's CA for the address the programs use.
    out = cloud().run("openssl s_client -connect 127.0.0.1:5671 -CAfile %s -verify_return_error "
                      "-verify_ip 127.0.0.1 </dev/null", CA)
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr


def test_consumer_is_read_only():
    permissions = json.loads(cloud().check_output(
        "rabbitmqctl -q list_user_permissions edgefleet-probe --formatter json"))
    assert permissions == [{"vhost": "edgefleet", "configure": "^$", "write": "^$", "read": "^edgefleet\\.probe$"}]


def device_rows(device):
    query = "SELECT id, token, IFNULL(qty, 'NULL') FROM app.changestream_probe ORDER BY id"
    return sorted(tuple(row) for row in sql(lab_host(device), query))


def central_rows(device):
    query = ("SELECT id, token, IFNULL(qty, 'NULL') FROM edgefleet_fanin.changestream_probe "
             "WHERE device_id = '%s' ORDER BY id" % device)
    return sorted(tuple(row) for row in sql(cloud(), query, socket=CENTRAL_SOCKET))


def test_rows_arrive_as_events_and_in_the_fan_in_table():
    lab = devices()
    assert len(lab) >= 2, lab
    tokens = {}
    for device in lab:
        token = uuid.uuid4().hex
        tokens[device] = token
        sql(lab_host(device),
            # Statements in the default database `app`: a channel-mode replica rewrites only the
            # default database (replicate_rewrite_db), so a qualified app.x DDL would be filtered there.
            "CREATE DATABASE IF NOT EXISTS app; USE app; "
            "CREATE TABLE IF NOT EXISTS changestream_probe (id BIGINT NOT NULL PRIMARY KEY, "
            "token VARCHAR(64) NOT NULL, qty INT NULL); "
            "INSERT INTO changestream_probe VALUES (1, '%s', 1), (2, '%s', 2), (3, '%s', NULL) "
            "ON DUPLICATE KEY UPDATE token = VALUES(token), qty = VALUES(qty); "
            "UPDATE changestream_probe SET qty = 20 WHERE id = 2; "
            "DELETE FROM changestream_probe WHERE id = 3" % (token, token, token))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(central_rows(device) == device_rows(device) for device in lab):
            break
        time.sleep(2)
    for device in lab:
        assert device_rows(device) == [("1", tokens[device], "1"), ("2", tokens[device], "20")]
        assert central_rows(device) == device_rows(device), device
    # The same changes as events on the probe consumer's own queue, read with its read-only user.
    out = probe("edgefleet-probe", probe_password(), "consume", "edgefleet.probe")
    assert out["result"] == "connected"
    events = [item["body"]["payload"] for item in out["bodies"]]
    for device in lab:
        mine = [event for event in events if event["source"]["name"] == device
                and (event.get("after") or event.get("before") or {}).get("token") == tokens[device]]
        ops = [(event["op"], (event.get("after") or event["before"])["id"]) for event in mine]
        assert ("c", 1) in ops and ("u", 2) in ops and ("d", 3) in ops, (device, ops)
        update = [event for event in mine if event["op"] == "u" and event["after"]["id"] == 2][-1]
        assert update["before"]["qty"] == 2 and update["after"]["qty"] == 20
        assert all(event["source"]["db"] == "app" and event["source"]["table"] == "changestream_probe" for event in mine)
    # read-only: the probe user cannot declare a queue
    assert probe("edgefleet-probe", probe_password(), "declare")["declare"].startswith("refused 403")


def probe_password():
    """The probe consumer's password, made by the scenario's password lookup (inventory/changestream.yml)."""
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "changestream-secrets", "probe")
    with open(path, encoding="utf-8") as handle:
        return handle.read().split()[0]


def test_replica_binlog_carries_column_names():
    host = cloud()
    for name in capture_instances():
        rows = sql(host, "SELECT @@binlog_row_metadata, @@sync_binlog",
                   socket="/run/mysqld/edgefleet-%s.sock" % name)
        assert rows == [["FULL", "1"]], (name, rows)
