"""redis-py against a tandem node's RESP port (run by tests/resp.rs):
RESP3 through HELLO, TLS with the deployment's CA, AUTH with an API key,
every family, WRONGTYPE as an exception, a pipeline of 1,000 INCRs whose
replies count 1..1000, scan_iter, and a MULTI/EXEC transaction
(redis-py's transactional pipeline)."""
import argparse
import sys

import redis

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--ca", required=True)
p.add_argument("--key", required=True)
a = p.parse_args()

r = redis.Redis(host="127.0.0.1", port=a.port, ssl=True, ssl_ca_certs=a.ca,
                password=a.key, protocol=3, decode_responses=True)


def check(what, got, want):
    if got != want:
        print(f"FAILED {what}: got {got!r}, want {want!r}")
        sys.exit(1)


check("ping", r.ping(), True)
check("set", r.set("key:py", "värde"), True)
check("get", r.get("key:py"), "värde")
check("set get", r.set("key:py", "next", get=True), "värde")
check("incr", r.incr("counter:one"), 1)
check("sadd", r.sadd("set:py", "a", "b"), 2)
check("smembers", r.smembers("set:py"), {"a", "b"})
check("hset", r.hset("hash:py", mapping={"f": "1", "g": "2"}), 2)
check("hgetall", r.hgetall("hash:py"), {"f": "1", "g": "2"})
try:
    r.sadd("key:py", "x")
    print("FAILED wrongtype: no error")
    sys.exit(1)
except redis.ResponseError as e:
    check("wrongtype", str(e).split()[0], "WRONGTYPE")
pipe = r.pipeline(transaction=False)
for _ in range(1000):
    pipe.incr("counter:py")
check("pipeline", pipe.execute(), list(range(1, 1001)))
check("scan_iter", sorted(r.scan_iter(match="*:py")), ["counter:py", "hash:py", "key:py", "set:py"])
check("dbsize", r.dbsize(), 5)
tx = r.pipeline(transaction=True)
tx.set("key:tx", "1")
tx.incr("counter:tx")
tx.incr("counter:tx")
tx.sadd("set:tx", "a", "b")
check("multi/exec", tx.execute(), [True, 1, 2, 2])
check("after exec", (r.get("key:tx"), r.get("counter:tx"), r.scard("set:tx")), ("1", "2", 2))
print("redis-py: all checks passed")
