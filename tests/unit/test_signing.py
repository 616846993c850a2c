"""Signed reports: canonical JSON, Ed25519 signatures, tampering, keys, and phase timings."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest

from drengine.core.errors import ReportInvalid
from drengine.core.phases import Phases
from drengine.crypto.keys import MasterKeys
from drengine.crypto.signing import (
    SigningKey,
    canonical,
    check_signer,
    fingerprint,
    parse_public_key,
    same_key,
    verify,
)

DOC = {"type": "drengine drill report", "rto": {"measured_ms": 1234}, "checks": [{"ok": True}]}


def test_the_signing_key_is_derived_from_the_master_keys_and_differs_per_repository() -> None:
    keys = MasterKeys.generate()
    assert SigningKey.of(keys).public == SigningKey.of(keys).public
    assert SigningKey.of(MasterKeys.generate()).public != SigningKey.of(keys).public


def test_canonical_json_ignores_key_order_and_refuses_floats() -> None:
    assert canonical({"b": 1, "a": [2, "é"]}) == b'{"a":[2,"\\u00e9"],"b":1}'
    with pytest.raises(ValueError, match="no floats"):
        canonical({"a": {"b": [1.5]}})


def test_a_signed_document_verifies_after_reformatting_but_not_after_any_change() -> None:
    key = SigningKey.of(MasterKeys.generate())
    env = key.sign(copy.deepcopy(DOC))
    reformatted = json.loads(json.dumps(env, indent=4, sort_keys=False))
    doc, public = verify(reformatted)
    assert doc == DOC and public == key.public
    text = json.dumps(env)
    changed = json.loads(text.replace("1234", "1235"))
    with pytest.raises(ReportInvalid, match="changed after signing"):
        verify(changed)
    added = copy.deepcopy(env)
    added["document"]["extra"] = 1
    with pytest.raises(ReportInvalid):
        verify(added)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: e.pop("signature"),
        lambda e: e["signature"].update(algorithm="rsa"),
        lambda e: e["signature"].update(public_key="!!"),
        lambda e: e["signature"].update(key_id="00" * 32),
        lambda e: e["signature"].update(value=e["signature"]["value"][:-4] + "AAA="),
        lambda e: e.update(document=[1]),
        lambda e: e["document"].update(x=0.5),
    ],
)
def test_a_malformed_envelope_is_refused_with_a_sentence(mangle: object) -> None:
    env = SigningKey.of(MasterKeys.generate()).sign(copy.deepcopy(DOC))
    mangle(env)  # type: ignore[operator]
    with pytest.raises(ReportInvalid):
        verify(env)


def test_a_report_giving_a_key_twice_is_refused() -> None:
    from drengine.reports.verify import parse

    env = SigningKey.of(MasterKeys.generate()).sign({"verdict": "failed"})
    text = json.dumps(env).replace('"document": {', '"document": {"verdict": "passed", ', 1)
    with pytest.raises(ReportInvalid, match="twice"):
        parse(text.encode(), "forged.json")


def test_keys_are_given_as_documents_base64_or_fingerprints() -> None:
    key = SigningKey.of(MasterKeys.generate())
    other = SigningKey.of(MasterKeys.generate())
    doc = key.signer_document("ab" * 32)
    assert check_signer(doc, "ab" * 32) == key.public
    with pytest.raises(ReportInvalid):
        check_signer(doc, "cd" * 32)  # bound to its repository
    for given in (json.dumps(doc), doc["public_key"], fingerprint(key.public), key.key_id):
        trusted = parse_public_key(given)
        assert same_key(key.public, trusted)
        assert not same_key(other.public, trusted)
    with pytest.raises(ReportInvalid):
        parse_public_key("not a key")


def test_phases_measure_the_union_of_overlapping_spans() -> None:
    seen: list[str] = []
    phases = Phases(lambda name, _s: seen.append(name))

    def work() -> None:
        with phases.span("fetch"):
            time.sleep(0.2)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with phases.span("verify"):
        pass
    wall, busy = phases.wall("fetch"), phases.busy("fetch")
    assert 0.19 < wall < 0.35  # the two overlapped: wall is one span, not two
    assert busy > 0.38
    assert [p["phase"] for p in phases.to_json()] == ["fetch", "verify"]
    assert "fetch" in seen and all(isinstance(p["wall_ms"], int) for p in phases.to_json())
