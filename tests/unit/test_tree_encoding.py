"""The tree encoder writes JSON field by field for speed; its output must stay byte for byte
the canonical JSON of the format (sorted keys, no whitespace, ASCII): trees of unchanged
directories deduplicate across snapshots and against trees written by earlier versions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drengine.core.model import (
    NODE_TYPES,
    Node,
    decode_tree,
    encode_node,
    encode_tree,
    encode_tree_parts,
    encode_tree_reference,
)

_ints = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
_ids = st.binary(min_size=32, max_size=32)
_text = st.text(max_size=12)  # any code point: escaping must match the json module's


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(NODE_TYPES))
    node = Node(
        name=draw(st.binary(min_size=1, max_size=40)),
        type=kind,
        mode=draw(_ints),
        uid=draw(_ints),
        gid=draw(_ints),
        user=draw(_text),
        group=draw(_text),
        mtime_ns=draw(_ints),
        ctime_ns=draw(_ints),
        size=draw(_ints),
        inode=draw(_ints),
        device=draw(_ints),
        links=draw(_ints),
        rdev=draw(_ints),
        target=draw(st.none() | st.binary(max_size=40)),
        xattrs=draw(
            st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=30)), max_size=3)
        ),
        content=draw(st.lists(_ids, max_size=4)),
        content_hash=draw(st.none() | st.just(b"") | _ids),
        subtree=draw(st.none() | _ids),
        sparse=draw(st.booleans()),
        damaged=draw(st.just("") | _text),
    )
    return node


@settings(max_examples=400, deadline=None)
@given(st.lists(nodes(), max_size=6, unique_by=lambda n: n.name))
def test_tree_encoding_is_the_canonical_json(tree: list[Node]) -> None:
    assert encode_tree(tree) == encode_tree_reference(tree)


@settings(max_examples=200, deadline=None)
@given(st.lists(nodes(), max_size=6, unique_by=lambda n: n.name))
def test_a_tree_of_encoded_nodes_is_the_tree_of_the_nodes(tree: list[Node]) -> None:
    """A backup joins the JSON of unchanged entries (kept in its cache) with new nodes'."""
    parts = [(n.name, encode_node(n).encode("ascii")) for n in reversed(tree)]
    assert encode_tree_parts(parts) == encode_tree(tree)


def test_a_real_file_and_directory_round_trip() -> None:
    f = Node(b"caf\xc3\xa9", "file", 0o644, 1000, 1000, "\u00e9mile", "staff", 1, 2, 3, 4, 5, 1)
    f.content, f.content_hash = [bytes(32), b"\x01" * 32], b"\x02" * 32
    d = Node(b"dir", "dir", 0o755, subtree=b"\x03" * 32)
    data = encode_tree([f, d])
    assert data == encode_tree_reference([d, f])
    assert [n.name for n in decode_tree(data)] == [b"caf\xc3\xa9", b"dir"]
    assert decode_tree(data)[0].content == f.content


_json_values = st.recursive(
    st.none() | st.booleans() | _ints | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@st.composite
def node_dicts(draw: st.DrawFn) -> object:
    """A node's JSON object, then possibly perturbed: a field dropped, or replaced by any
    JSON value (wrong types, out of range, bad base64 or hex)."""
    d = draw(nodes()).to_dict()
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*sorted(d), "extra"]))
        if draw(st.booleans()):
            d.pop(key, None)
        else:
            d[key] = draw(_json_values)
    return d


@settings(max_examples=1500, deadline=None)
@given(node_dicts())
def test_the_fast_node_reader_agrees_with_the_checking_one(d: dict[str, object]) -> None:
    from drengine.core.model import _NodeReader, _well_formed

    slow = _NodeReader(d).node()
    fast = _well_formed(d)
    if fast is not None:
        assert slow.invalid == "" and fast == slow and fast.invalid == ""
    else:
        assert slow.invalid != "" or not isinstance(d, dict)


@settings(max_examples=300, deadline=None)
@given(nodes())
def test_well_formed_nodes_take_the_fast_path(node: Node) -> None:
    from drengine.core.model import _NodeReader, _well_formed

    d = node.to_dict()
    if _NodeReader(d).node().invalid == "":
        assert _well_formed(d) is not None
