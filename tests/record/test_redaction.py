"""Redaction of secret-looking parameter names and the sanitize callable."""

import textwrap
import uuid

import pytest
from _util import is_redacted, last_json, only_call, read_calls, run_python

import calltape

DEFAULT_SECRET_NAMES = ["password", "passwd", "secret", "token", "api_key", "apikey",
                        "authorization", "cookie", "credential", "private_key"]


def tape_bytes(path):
    """Everything SQLite keeps for the tape: the file and its WAL."""
    data = b""
    for suffix in ("", "-wal", "-journal"):
        p = path.parent / (path.name + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def test_default_secret_names_are_redacted(tape, stats_delta):
    @calltape.record
    def login(user, password, passwd, secret, api_key, apikey, authorization, cookie,
              credential, private_key, *, token):
        return f"hello {user}"

    tag = uuid.uuid4().hex
    secrets = {name: f"S3CR3T-{name}-{tag}" for name in DEFAULT_SECRET_NAMES}
    assert login(f"alice-{tag}", **secrets) == f"hello alice-{tag}"
    c = only_call(tape)
    assert c.args["user"] == f"alice-{tag}"
    assert c.result == f"hello alice-{tag}"
    for name in DEFAULT_SECRET_NAMES:
        assert is_redacted(c.args[name]), (name, c.args[name])
        assert c.args[name] is not None
    raw = tape_bytes(tape)
    for name, value in secrets.items():
        assert value.encode() not in raw, f"the secret passed as {name!r} reached the tape file"
    assert stats_delta("redacted") >= len(DEFAULT_SECRET_NAMES)


def test_redaction_is_case_insensitive(tape):
    @calltape.record
    def connect(Password, API_KEY, Token, SECRET, Cookie, host):
        return host

    connect("p", "k", "t", "s", "c", host="db")
    c = only_call(tape)
    for name in ("Password", "API_KEY", "Token", "SECRET", "Cookie"):
        assert is_redacted(c.args[name]), name
    assert c.args["host"] == "db"


def test_secret_defaults_are_redacted_too(tape):
    @calltape.record
    def connect(host, password="hunter2-default-secret"):
        return host

    connect("db")
    c = only_call(tape)
    assert is_redacted(c.args["password"])
    assert b"hunter2-default-secret" not in tape_bytes(tape)


def test_extra_redact_names_and_patterns(tape):
    @calltape.record(redact=["pin", "card_*"])
    def pay(user, pin, card_number, card_cvv, password, amount):
        return amount

    pay("bob", "1234", "4111111111111111", "999", "pw", 10)
    c = only_call(tape)
    for name in ("pin", "card_number", "card_cvv", "password"):
        assert is_redacted(c.args[name]), name
    assert c.args["user"] == "bob" and c.args["amount"] == 10
    assert b"4111111111111111" not in tape_bytes(tape)


def test_redact_false_opts_out(tape):
    @calltape.record(redact=False)
    def login(user, password, token):
        return True

    login("carol", "plain-password", "plain-token")
    c = only_call(tape)
    assert c.args == {"user": "carol", "password": "plain-password", "token": "plain-token"}


def test_other_functions_keep_default_redaction(tape):
    @calltape.record(redact=False)
    def open_door(password):
        return 1

    @calltape.record
    def closed_door(password):
        return 2

    open_door("a")
    closed_door("b")
    calls = read_calls(tape)
    assert calls[0].args["password"] == "a"
    assert is_redacted(calls[1].args["password"])


def test_global_redact_configuration(tmp_path):
    path = tmp_path / "g.db"
    run_python(tmp_path, """
        import calltape
        calltape.configure(redact=["ssn", "*_pin"])
        @calltape.record
        def f(ssn, card_pin, password, name):
            return name
        assert f("123-45-6789", "0000", "pw", "dave") == "dave"
    """, tape=path)
    c = only_call(path)
    assert is_redacted(c.args["ssn"]) and is_redacted(c.args["card_pin"])
    assert is_redacted(c.args["password"])
    assert c.args["name"] == "dave"


def test_attribute_names_follow_configure_changes_between_calls(tmp_path, monkeypatch):
    """The decision for an attribute name is remembered between calls; changing
    the rules with configure() applies to the very next call."""
    path = tmp_path / "g.db"
    (tmp_path / "redact_accounts.py").write_text(textwrap.dedent("""
        class Account:
            __slots__ = ("ssn", "owner")
            def __init__(self, ssn, owner):
                self.ssn, self.owner = ssn, owner
        class Card:
            def __init__(self, pin, password):
                self.pin, self.password = pin, password
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    run_python(tmp_path, """
        import calltape
        from redact_accounts import Account, Card
        @calltape.record
        def f(account, card):
            return account.owner
        f(Account("1", "ann"), Card("0000", "pw"))
        calltape.configure(redact=["ssn", "pin"])
        f(Account("2", "bob"), Card("1111", "pw"))
        calltape.configure(redact=False)
        f(Account("3", "cy"), Card("2222", "pw"))
    """, tape=path)
    calls = read_calls(path, "f")
    accounts = [c.args["account"] for c in calls]
    cards = [c.args["card"] for c in calls]
    assert accounts[0].ssn == "1" and cards[0].pin == "0000" and is_redacted(cards[0].password)
    assert is_redacted(accounts[1].ssn) and is_redacted(cards[1].pin)
    assert accounts[1].owner == "bob" and is_redacted(cards[1].password)
    assert accounts[2].ssn == "3" and cards[2].pin == "2222" and cards[2].password == "pw"


def test_global_redact_false(tmp_path):
    path = tmp_path / "g.db"
    run_python(tmp_path, """
        import calltape
        calltape.configure(redact=False)
        @calltape.record
        def f(password, name):
            return name
        f("visible", "erin")
    """, tape=path)
    assert only_call(path).args == {"password": "visible", "name": "erin"}


def test_sanitize_callable_decides_what_is_recorded(tape):
    seen = []

    def scrub(name, value):
        seen.append(name)
        if isinstance(value, str):
            return value.replace("4111111111111111", "****")
        return value

    @calltape.record(sanitize=scrub)
    def charge(card, amount, note="no note"):
        return f"charged {card} {amount}"

    out = charge("4111111111111111", 10)
    # the function itself sees and returns the real values
    assert out == "charged 4111111111111111 10"
    c = only_call(tape)
    assert c.args == {"card": "****", "amount": 10, "note": "no note"}
    assert c.result == "charged **** 10"
    assert {"card", "amount", "note", "return"} <= set(seen)
    assert b"4111111111111111" not in tape_bytes(tape)


def test_sanitize_applies_to_default_values(tape):
    """A default value is recorded for the argument (and kept with the
    function's signature): the sanitizer must see it, or it reaches the tape."""
    def scrub(name, value):
        if isinstance(value, str):
            return value.replace("5500000000000004", "****")
        return value

    @calltape.record(sanitize=scrub)
    def charge(amount, note="fallback card 5500000000000004"):
        return amount

    charge(10)
    c = only_call(tape)
    assert c.args == {"amount": 10, "note": "fallback card ****"}
    assert b"5500000000000004" not in tape_bytes(tape)


def test_sanitize_may_replace_values_with_other_types(tape):
    @calltape.record(sanitize=lambda name, value: len(value) if name == "blob" else value)
    def f(blob, n):
        return n

    f(b"x" * 1000, 3)
    c = only_call(tape)
    assert c.args == {"blob": 1000, "n": 3}


def test_failing_sanitize_does_not_break_the_call_nor_leak(tape):
    def broken(name, value):
        raise RuntimeError("sanitizer bug")

    @calltape.record(sanitize=broken)
    def f(card):
        return card[-4:]

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert f("4111111111111111") == "1111"
    c = only_call(tape)
    assert c.args["card"] != "4111111111111111"
    assert c.args["card"] is not None
    assert b"4111111111111111" not in tape_bytes(tape)


def test_redaction_in_child_process_argument_kinds(tmp_path):
    """Keyword-only and positional-only parameters are redacted by name as well."""
    path = tmp_path / "k.db"
    proc = run_python(tmp_path, """
        import json, calltape
        @calltape.record
        def f(token, /, x, *, private_key):
            return x
        print(json.dumps({"r": f("tok-value", 1, private_key="pk-value")}))
    """, tape=path)
    assert last_json(proc) == {"r": 1}
    c = only_call(path)
    assert is_redacted(c.args["token"]) and is_redacted(c.args["private_key"])
    assert c.args["x"] == 1
    assert b"tok-value" not in tape_bytes(path) and b"pk-value" not in tape_bytes(path)


@pytest.mark.parametrize("name", ["password", "Passwd", "TOKEN", "Authorization", "apiKey"])
def test_each_name_variant(tape, name):
    ns = {"calltape": calltape}
    exec(f"@calltape.record\ndef f({name}, other):\n    return other\n", ns)
    assert ns["f"]("s3cret", 5) == 5
    c = only_call(tape)
    assert is_redacted(c.args[name])
    assert c.args["other"] == 5


# ---- redaction at every depth where there is a name -------------------------


def test_kwargs_keys_and_nested_dict_keys_are_redacted(tape):
    tag = uuid.uuid4().hex

    @calltape.record(redact=["pin"])
    def handle(user, config, **options):
        return {"session": {"Token": f"tok-{tag}", "user": user}, "pin": f"pin-{tag}"}

    handle("ann", {"db": {"password": f"pw-{tag}", "host": "h"}, "list": [{"cookie": f"c-{tag}"}]},
           api_key=f"k-{tag}", verbose=True)
    c = only_call(tape)
    assert is_redacted(c.args["options"]["api_key"]) and c.args["options"]["verbose"] is True
    assert is_redacted(c.args["config"]["db"]["password"]) and c.args["config"]["db"]["host"] == "h"
    assert is_redacted(c.args["config"]["list"][0]["cookie"])
    assert is_redacted(c.result["session"]["Token"]) and c.result["session"]["user"] == "ann"
    assert is_redacted(c.result["pin"])
    assert tag.encode() not in tape_bytes(tape)


def test_a_call_that_fails_to_bind_keeps_its_keyword_secrets_out(tape):
    tag = uuid.uuid4().hex

    @calltape.record
    def login(user):
        return user

    with pytest.raises(TypeError):
        login("ann", password=f"pw-{tag}")
    c = only_call(tape)
    assert c.outcome == "raised"
    assert is_redacted(c.args["kwargs"]["password"])
    assert tag.encode() not in tape_bytes(tape)


def test_partial_and_callable_objects_redact_by_their_signature(tape):
    import functools

    tag = uuid.uuid4().hex

    def connect(host, password, port=5432):
        return host

    class Client:
        def __call__(self, token, path):
            return path

    calltape.record(functools.partial(connect, "db"))(f"pw-{tag}")
    calltape.record(functools.partial(connect, "db"))(password=f"pw2-{tag}")
    calltape.record(Client())(f"tok-{tag}", "/x")
    calls = read_calls(tape)
    assert len(calls) == 3
    assert is_redacted(calls[0].args["args"][0])
    assert is_redacted(calls[1].args["kwargs"]["password"])
    assert is_redacted(calls[2].args["args"][0]) and calls[2].args["args"][1] == "/x"
    assert tag.encode() not in tape_bytes(tape)


def test_nested_secrets_in_locals_and_globals(tape):
    tag = uuid.uuid4().hex
    ns = {"calltape": calltape, "SETTINGS": {"secret": f"g-{tag}", "name": "app"}}
    exec(
        "@calltape.record(locals=True, globals=True)\n"
        "def work(n):\n"
        f"    creds = {{'private_key': 'l-{tag}', 'user': 'u'}}\n"
        "    return SETTINGS['name'] * n\n",
        ns,
    )
    ns["work"](1)
    c = only_call(tape)
    assert is_redacted(c.locals["creds"]["private_key"]) and c.locals["creds"]["user"] == "u"
    assert is_redacted(c.globals["SETTINGS"]["secret"])
    assert tag.encode() not in tape_bytes(tape)


def test_calltape_run_redacts_kwargs_keys(tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "prog.py").write_text(
        "def send(url, **headers):\n    return len(headers)\n\n"
        f"send('u', authorization='Bearer {tag}', accept='json')\n"
        f"send('u', extra={{'token': 't-{tag}'}})\n"
    )
    run_python(tmp_path, f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-m", "calltape", "run", "--quiet", "--tape",
                        {str(tmp_path / "r.db")!r}, {str(tmp_path / "prog.py")!r}], check=True)
    """)
    calls = calltape.open(tmp_path / "r.db").calls("send")
    assert is_redacted(calls[0].args["headers"]["authorization"])
    assert calls[0].args["headers"]["accept"] == "json"
    assert is_redacted(calls[1].args["headers"]["extra"]["token"])
    assert tag.encode() not in tape_bytes(tmp_path / "r.db")


SECRET_CARD = "4111111111111111"
BROKEN_SANITIZE_GLOBAL = f"global {SECRET_CARD}"


def test_failing_sanitize_gives_one_marker_in_every_slot(tape, stats_delta):
    """A sanitizer that raises makes the value Unencodable(type, "sanitize raised
    <type>") wherever it stands: argument, default (in the call and in the
    function's signature), result, local and global; neither the value nor the
    exception's message (which may hold it) reaches the tape."""
    def broken(name, value):
        raise RuntimeError(f"sanitizer bug on {value!r}")

    @calltape.record(sanitize=broken, locals=True, globals=True)
    def charge(card, note=f"fallback {SECRET_CARD}"):
        here = f"local {SECRET_CARD}"
        return len(here) + len(BROKEN_SANITIZE_GLOBAL) + len(card)

    assert charge(SECRET_CARD) == charge.__wrapped__(SECRET_CARD)
    c = only_call(tape)
    marker = calltape.Unencodable
    slots = {"card": c.args["card"], "note": c.args["note"], "return": c.result,
             "local": c.locals["here"], "global": c.globals["BROKEN_SANITIZE_GLOBAL"]}
    for slot, value in slots.items():
        assert isinstance(value, marker), (slot, value)
        assert value.reason == "sanitize raised RuntimeError", (slot, value)
    assert c.result.type == "int" and c.args["card"].type == "str"
    (fn,) = [f for f in calltape.open(tape).functions() if f.qualname.endswith("charge")]
    assert isinstance(fn.defaults["note"], marker), fn.defaults
    assert SECRET_CARD.encode() not in tape_bytes(tape)
    assert b"sanitizer bug" not in tape_bytes(tape)
    assert stats_delta("unencodable") >= 6
