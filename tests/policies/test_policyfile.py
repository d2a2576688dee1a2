"""The policy file (policies.policyfile): any rule set renders to a file that parses back to
the same set; the fast reader and the YAML reference agree on every file the fast one
accepts and hand everything else to the reference; every error is reported at its line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import policyfile
from policies.policyfile import PolicyFileInvalid, parse, parse_reference, render
from policies.vocabulary import ACTIONS_BY_KIND, Rule, parse_rule

# Values over the whole vocabulary alphabet, so quoting and YAML's own readings are tried.
_ID = st.text("abcXYZ019._@:-", min_size=1, max_size=12)
_NAME = st.text("abXY09._-", min_size=1, max_size=10)
TENANT = _NAME
SUBJECT = st.one_of(_ID.map(lambda v: f"user:{v}"), _NAME.map(lambda v: f"role:{v}"))
ROLE = _NAME.map(lambda v: f"role:{v}")
KIND = st.sampled_from(sorted(ACTIONS_BY_KIND))


@st.composite
def grant(draw, tenant: str) -> Rule:
    kind = draw(KIND)
    if kind in ("policy", "audit", "tenant", "compliance"):
        obj = kind
    else:
        obj = draw(st.one_of(st.just(f"{kind}:*"), _ID.map(lambda v: f"{kind}:{v}")))
    act = draw(st.sampled_from(sorted(ACTIONS_BY_KIND[kind])))
    return Rule.p(draw(SUBJECT), tenant, obj, act, draw(st.sampled_from(["allow", "deny"])))


@st.composite
def rule_sets(draw) -> tuple[str, list[Rule]]:
    tenant = draw(TENANT)
    rules = draw(st.lists(grant(tenant), max_size=12))
    rules += [Rule.g(m, r, tenant) for m, r in draw(st.lists(st.tuples(SUBJECT, ROLE), max_size=6))]
    objs = st.one_of(_ID.map(lambda v: f"ds:{v}"), _ID.map(lambda v: f"class:{v}"))
    rules += [Rule.g2(o, f"class:{c}") for o, c in draw(st.lists(st.tuples(objs, _ID), max_size=4))]
    return tenant, [parse_rule(r) for r in rules]


def _fast(text: str):
    """What the fast reader makes of ``text``, or None when it hands it on."""
    try:
        found = policyfile._Scanner().scan(text)
    except policyfile._Fallback:
        return None
    return policyfile._fast_document(found, "f.yaml")


@settings(max_examples=300, deadline=None)
@given(rule_sets())
def test_a_rendered_file_parses_back_to_its_rules_by_both_readers(case):
    tenant, rules = case
    text = render(tenant, rules, header=["a header"])
    reference = parse_reference(text, file="f.yaml")
    assert reference.tenant == tenant
    assert set(reference.lines) == {r.line for r in rules}
    assert parse(text, file="f.yaml") == reference
    fast = _fast(text)
    assert fast is None or fast == reference


def test_the_fast_reader_takes_what_render_writes():
    rules = [
        Rule.p("user:bob", "acme", "ds:x", "train"),
        Rule.p("role:ml-engineer", "acme", "model:*", "use", "deny"),
        Rule.g("user:bob", "role:ml-engineer", "acme"),
        Rule.g2("ds:x", "class:restricted"),
    ]
    text = render("acme", rules)
    assert _fast(text) == parse_reference(text, file="f.yaml")
    assert _fast(render("acme", [])) is not None


HAND_WRITTEN = """\
# acme's policy, reviewed like code
tenant: acme   # the tenant

roles:
  role:admin:
    - user:ada        # the only admin
  # nobody else
  role:viewer: []
grants:
  - {subject: user:bob, object: ds:x, action: train}                 # effect: allow
  - {action: read, subject: role:viewer, object: policy, effect: allow}
  - {subject: user:eve, object: ds:x, action: train, effect: deny}
classes: {}
"""


def test_comments_blank_lines_key_order_and_defaults_read_alike():
    fast = _fast(HAND_WRITTEN)
    assert fast is not None
    assert fast == parse_reference(HAND_WRITTEN, file="f.yaml")
    assert fast.lines == {
        "g,user:ada,role:admin,acme": 6,
        "p,user:bob,acme,ds:x,train,allow": 10,
        "p,role:viewer,acme,policy,read,allow": 11,
        "p,user:eve,acme,ds:x,train,deny": 12,
    }


@pytest.mark.parametrize(
    "text",
    [
        # block-style grants, quoted values, another indentation: YAML, not the fast layout
        "tenant: acme\ngrants:\n  - subject: user:bob\n    object: ds:x\n    action: train\n",
        "tenant: 'acme'\ngrants:\n  - {subject: \"user:bob\", object: ds:x, action: train}\n",
        "tenant: acme\nroles:\n  role:admin:\n  - user:ada\n",
        "tenant: acme\nroles:\n    role:admin: [user:ada]\n",
        "---\ntenant: acme\n",
        "tenant: acme\r\ngrants: []\r\n",
        # null sections and keys
        "tenant: acme\ngrants:\n# none yet\n",
        "tenant: acme\nroles:\n  role:admin:\n  role:x: []\n",
    ],
)
def test_other_yaml_goes_to_the_reference(text):
    assert _fast(text) is None
    try:
        expected = parse_reference(text, file="f.yaml")
    except PolicyFileInvalid as exc:
        with pytest.raises(PolicyFileInvalid) as raised:
            parse(text, file="f.yaml")
        assert raised.value.errors == exc.errors
    else:
        assert parse(text, file="f.yaml") == expected


def test_a_value_yaml_would_read_otherwise_is_quoted():
    rules = [
        Rule.g("user:bob:", "role:x", "-"),  # a trailing ':' would make a mapping
        Rule.g("user:007", "role:x", "-"),  # a number stays text
        Rule.p("user:a@b", "-", "ds:*", "read"),
    ]
    text = render("-", rules)
    assert "tenant: '-'" in text and "- 'user:bob:'" in text
    assert set(parse(text, file="f.yaml").lines) == {r.line for r in rules}


BAD = """\
tenant: acme
roles:
  role:admin:
    - bob
  admin:
    - user:ada
  role:admin:
    - user:ada
grants:
  - {subject: user:bob, object: ds:x, action: fly}
  - subject: user:bob
    object: thing:1
    action: read
    purpose: support
  - {subject: user:bob, object: ds:x, action: train}
  - {subject: user:bob, object: ds:x, action: train, effect: allow}
  - {subject: user:bob, object: ds:x}
  - {subject: user:bob, object: ds:y, action: train, effect: maybe, note: x}
classes:
  restricted: [ds:y]
colour: blue
"""


def test_every_error_is_reported_at_its_line():
    with pytest.raises(PolicyFileInvalid) as raised:
        parse(BAD, file="acme.yaml")
    shown = [str(e) for e in raised.value.errors]
    assert shown == [
        "acme.yaml:4: member must be user:<sub> or role:<name>: 'bob'",
        "acme.yaml:5: role must be role:<name>: 'admin'",
        "acme.yaml:7: 'role:admin' again (first on line 3)",
        "acme.yaml:10: action: unknown action: 'fly'",
        "acme.yaml:12: object: unknown object kind: 'thing:1'",
        "acme.yaml:14: purpose: the policy has no purposes (a data source's allowed_purposes "
        "decide them); remove the key",
        "acme.yaml:16: the same rule as line 15: p,user:bob,acme,ds:x,train,allow",
        "acme.yaml:17: a grant needs action",
        "acme.yaml:18: unknown key 'note' in a grant",
        "acme.yaml:18: effect must be 'allow' or 'deny': 'maybe'",
        "acme.yaml:20: class: unknown object kind: 'restricted'",
        "acme.yaml:21: unknown key 'colour' (expected tenant, roles, grants, classes)",
    ]
    reasons = {e.reason for e in raised.value.errors}
    assert {"purpose_unsupported", "duplicate_rule", "duplicate_key", "bad_action"} <= reasons


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("tenant: acme\ngrants: [\n", 3, "yaml_syntax"),
        ("", 1, "bad_structure"),
        ("- just a list\n", 1, "bad_structure"),
        ("roles: {}\n", 1, "missing_key"),
        ("tenant: '*'\n", 1, "bad_tenant"),
        ("tenant: acme\ngrants:\n  role:x: 1\n", 3, "bad_structure"),
        ("tenant: acme\nroles:\n  role:x: user:bob\n", 3, "bad_structure"),
    ],
)
def test_a_file_that_is_no_policy_says_where(text, line, reason):
    with pytest.raises(PolicyFileInvalid) as raised:
        parse(text, file="p.yaml")
    first = raised.value.errors[0]
    assert (first.file, first.line, first.reason) == ("p.yaml", line, reason)
    assert str(first).startswith(f"p.yaml:{line}: ")


def test_a_bad_tenant_hides_no_other_error():
    with pytest.raises(PolicyFileInvalid) as raised:
        parse("tenant: a b\ngrants:\n  - {subject: bob, object: ds:x, action: read}\n")
    assert [(e.line, e.reason) for e in raised.value.errors] == [
        (1, "bad_chars"),
        (3, "bad_subject"),
    ]


def test_render_refuses_another_tenants_rule():
    with pytest.raises(ValueError):
        render("acme", [Rule.p("user:bob", "other", "ds:x", "read")])
    with pytest.raises(ValueError):
        render("acme", [Rule.g("user:bob", "role:x", "other")])


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text(render("acme", [Rule.p("user:bob", "acme", "ds:x", "read")]))
    doc = policyfile.load(path)
    assert doc.file == str(path) and doc.rules() == [Rule.p("user:bob", "acme", "ds:x", "read")]
    assert doc.line_of("p,user:bob,acme,ds:x,read,allow") == 4
    path.write_bytes(b"tenant: \xff\n")
    with pytest.raises(PolicyFileInvalid, match="not UTF-8"):
        policyfile.load(path)
