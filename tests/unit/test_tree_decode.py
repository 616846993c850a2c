"""The msgspec tree decoder (``core/tree_decode``) must give exactly what the reference
``model.decode_tree`` gives, for every input: the same nodes with the same ``invalid``
reasons, or the same ``ValueError``. It only ever answers for trees the reference reads
as wholly valid; everything else goes to the reference."""

from __future__ import annotations

import json
import unittest.mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tree_encoding import node_dicts, nodes

from drengine.core import model, tree_decode
from drengine.core.model import Node, encode_tree


def _outcome(decode: object, data: bytes) -> object:
    try:
        got = decode(data)  # type: ignore[operator]
    except ValueError:
        return "ValueError"
    return [(n, n.invalid) for n in got]


def _agree(data: bytes) -> None:
    assert _outcome(tree_decode.decode_tree, data) == _outcome(model.decode_tree, data)


def _fast_only(data: bytes) -> list[Node]:
    """The fast path's answer; fails the test if it fell back to the reference."""
    with unittest.mock.patch.object(model, "decode_tree", side_effect=AssertionError):
        return tree_decode.decode_tree(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(node_dicts(), max_size=5), st.sampled_from([None, 1]), st.booleans())
def test_perturbed_trees_decode_as_the_reference_decodes_them(
    docs: list[object], indent: int | None, ascii_only: bool
) -> None:
    data = json.dumps({"nodes": docs}, indent=indent, ensure_ascii=ascii_only).encode()
    _agree(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(nodes(), max_size=6, unique_by=lambda n: n.name), st.data())
def test_mutated_tree_bytes_decode_as_the_reference_decodes_them(
    tree: list[Node], data: st.DataObject
) -> None:
    blob = bytearray(encode_tree(tree))
    for _ in range(data.draw(st.integers(1, 3))):
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.sampled_from(b'"{}[],:0123456789eE.-+ \\nulltrueaAzZ=/\xff\x00'))
    _agree(bytes(blob))


@settings(max_examples=100, deadline=None)
@given(st.lists(nodes(), max_size=6, unique_by=lambda n: n.name))
def test_valid_trees_take_the_fast_path(tree: list[Node]) -> None:
    data = encode_tree(tree)
    reference = model.decode_tree(data)
    if all(n.invalid == "" for n in reference):
        assert _fast_only(data) == reference


_NODE = '"name":"YQ==","type":"fifo","mode":420,"uid":0,"gid":0,"mtime_ns":1'


@pytest.mark.parametrize(
    "text",
    [
        b'{"nodes":[{' + _NODE.encode() + b',"extra":"\xff"}]}',  # invalid UTF-8, skipped
        b'{"nodes":[{' + _NODE.encode() + b',"extra":"\xc0\x80"}]}',  # overlong NUL
        '\ufeff{"nodes":[{' + _NODE + "}]}",  # a byte-order mark: json reads it
        '{"nodes":[{' + _NODE + ',"extra":NaN}]}',
        '{"nodes":[{' + _NODE + ',"user":"\\ud800"}]}',  # a lone surrogate escape
        '{"nodes":[{' + _NODE + ',"mode":9999999,"mode":1}]}',  # duplicate keys: last wins
        '{"nodes":[{' + _NODE + ',"inode":18446744073709551615}]}',
        '{"nodes":[{' + _NODE + ',"inode":18446744073709551616}]}',
        '{"nodes":[{' + _NODE + ',"links":-1}]}',
        '{"nodes":[{' + _NODE + ',"target":null}]}',
        '{"nodes":[{' + _NODE + ',"subtree":""}]}',
        '{"nodes":[{' + _NODE + ',"sparse":1}]}',
        '{"nodes":[{' + _NODE + ',"mode":true}]}',
        '{"nodes":[{' + _NODE + ',"mode":1.0}]}',
        '{"nodes":[{' + _NODE + ',"content":["' + "g" * 64 + '"]}]}',
        '{"nodes":[{' + _NODE + ',"xattrs":[["YQ==","YQ==","YQ=="]]}]}',
        '{"nodes":[{' + _NODE.replace("fifo", "symlink") + "}]}",
        '{"nodes":[{' + _NODE.replace("fifo", "dir") + "}]}",
        '{"nodes":[{' + _NODE.replace("fifo", "file") + "}]}",
        '{"nodes":[{' + _NODE.replace("YQ==", "YR==") + "}]}",  # non-zero padding bits
        '{"nodes":[{' + _NODE + "}]} x",
        '{"nodes":[{' + _NODE + "}],}",
        '{"nodes":{}}',
        '{"nodes":[1]}',
        "[]",
        "",
    ],
)
def test_crafted_trees_decode_as_the_reference_decodes_them(text: str | bytes) -> None:
    _agree(text if isinstance(text, bytes) else text.encode())


def test_a_plain_node_is_read_by_the_fast_path() -> None:
    (node,) = _fast_only(('{"nodes":[{' + _NODE + ',"user":"\\u00e9"}]}').encode())
    assert node == Node(b"a", "fifo", 0o644, mtime_ns=1, user="\u00e9")


def test_owner_names_are_shared_and_their_table_stays_bounded() -> None:
    def tree(user: str) -> bytes:
        return encode_tree([Node(b"f%d" % i, "fifo", 0o644, mtime_ns=1, user=user, group=user)
                            for i in range(3)])  # fmt: skip

    a, b = tree_decode.decode_tree(tree("alice")), tree_decode.decode_tree(tree("alice"))
    assert len({id(n.user) for n in a + b} | {id(n.group) for n in a + b}) == 1
    for i in range(5000):  # many distinct names (a crafted tree): the table is cleared
        tree_decode.decode_tree(tree(f"u{i}"))
    assert len(tree_decode._OWNERS) <= 4097
    assert [n.user for n in tree_decode.decode_tree(tree("bob"))] == ["bob"] * 3
