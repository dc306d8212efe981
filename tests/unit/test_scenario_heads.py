"""A scenario file's id and profiles read from its top-level lines (qa.scenario.heads): pure, no file read."""

from __future__ import annotations

import pytest

from qa.scenario.heads import Head, head


def test_the_plain_head_of_a_scenario() -> None:
    text = "# a comment\nid: say-hi\ntitle: it says: hi\nprofiles: [fast, transport-2]  # why\nsteps:\n  - send: x\n"
    assert head(text) == Head("say-hi", ("fast", "transport-2"))
    assert head("id: a\n") == Head("a", ()), "no profiles: in every profile"
    assert head("id: a\nprofiles: []\n") == Head("a", ())
    assert head("id: a\r\nprofiles: [b]\r\n\r\n") == Head("a", ("b",))
    assert head("\nid:   a1   \n\n#x\nprofiles:   [ b ,c ]   \n") == Head("a1", ("b", "c"))
    assert head("id: a # comment\n") == Head("a", ())
    assert head("other_key-2:\nid: a\n") == Head("a", ())
    assert len({head("id: a\n"), Head("a", ())}) == 1, "a value: hashable, equal by its fields"


@pytest.mark.parametrize("text", [
    "",
    "title: no id\n",
    "id:\n  a\n",                    # the value on the next line
    "id: # only a comment\n",
    "id: a\nid: b\n",                # written twice: the parse refuses the file
    "id: a\nprofiles: [b]\nprofiles: [c]\n",
    "id: 'a'\n",                     # quoted
    "id: A\n",                       # not a scenario id
    "id: -a\n",
    "id: 123\n",                     # YAML reads these as a number, a boolean, nothing, a date
    "id: yes\n",
    "id: null\n",
    "id: 2024-01-01\n",
    "id: a#b\n",
    "id: &x a\n",
    "id: a\nprofiles:\n  - b\n",     # a block list
    "id: a\nprofiles: [b,\n  c]\n",  # a flow list over two lines
    "id: a\nprofiles: b\n",
    "id: a\nprofiles: [B]\n",
    "id: a\nprofiles: [on]\n",
    "id: a\nprofiles: [b, , c]\n",
    "id: a\nprofiles: [b]x\n",
    "---\nid: a\n",
    "id: a\n---\nid: b\n",
    "%YAML 1.1\nid: a\n",
    "{id: a}\n",
    "'id': a\n",
    "<<: *base\nid: a\n",
    "? id\n: a\n",
    "- id: a\n",
    "\tid: a\n",
    "id: a\nXyz\n",                 # a line at the top that is not a key
    "id : a\n",
    "id:a\n",
    "id: a\rprofiles: [b]\n",         # a lone carriage return, and the other breaks YAML knows
    "title: x\x85profiles: [b]\nid: a\n",
    "title: x\rprofiles: [b]\nid: a\n",
    "title: x\u2028profiles: [b]\nid: a\n",
    "title: x\u2029id: b\nid: a\n",
    "id: a\ntitle: \"two\nprofiles: [b]\"\n",  # inside a quoted title: a line the head cannot read as a key
])
def test_a_head_that_needs_the_parse_is_none(text: str) -> None:
    assert head(text) is None, text
