"""Label schemas: seed 001's class order, the CLEVR multi-label schema, JSON round trips, parsing
human tags, the three condition encodings and `describe` as the inverse of `parse`."""
import itertools
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anime_gan.errors import UserError
from anime_gan.labels import (COLOR_RGB, EYE_COLORS, HAIR_COLORS, Schema, anime_schema, cond_dim, encode,
                              multi_label_schema, parse_rgb, rgb_table)

from conftest import CLEVR_OBJECTS

# Copied from seed 001's README: the index of a class is its position in these lists.
SEED_HAIR = ['orange', 'white', 'aqua', 'gray', 'green', 'red', 'purple', 'pink', 'blue', 'black', 'brown', 'blonde']
SEED_EYE = ['black', 'orange', 'pink', 'yellow', 'aqua', 'purple', 'green', 'brown', 'red', 'blue']

ANIME = anime_schema()
CLEVR = multi_label_schema(CLEVR_OBJECTS)
ALL_PAIRS = list(itertools.product(range(12), range(10)))


def label(h, e):
    v = np.zeros(22, np.float32)
    v[h] = v[12 + e] = 1
    return v


# ---- schemas -----------------------------------------------------------------------------------

def test_anime_schema_uses_seed_001_class_order():
    assert list(HAIR_COLORS) == SEED_HAIR and list(EYE_COLORS) == SEED_EYE
    assert [g.name for g in ANIME.groups] == ["hair", "eye"]
    assert list(ANIME.group("hair").classes) == SEED_HAIR
    assert list(ANIME.group("eye").classes) == SEED_EYE
    assert (ANIME.dim, ANIME.class_sizes, ANIME.multi_label) == (22, (12, 10), 0)
    assert ANIME.span("hair") == slice(0, 12) and ANIME.span("eye") == slice(12, 22)


def test_multi_label_schema_has_the_24_clevr_objects():
    assert CLEVR.dim == 24 and CLEVR.multi_label == 24 and CLEVR.class_sizes == ()
    assert CLEVR.groups[0].classes == tuple(CLEVR_OBJECTS) and CLEVR.groups[0].multi
    assert CLEVR_OBJECTS[0] == "gray cube" and CLEVR_OBJECTS[23] == "yellow cylinder"


@pytest.mark.parametrize("schema", [ANIME, CLEVR], ids=["anime", "clevr"])
def test_schema_json_round_trip(schema, tmp_path):
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    path = schema.save(tmp_path)
    assert path.name == "schema.json"
    loaded = Schema.load(tmp_path)
    assert loaded == schema and loaded.offsets == schema.offsets
    assert [g.suffixes for g in loaded.groups] == [g.suffixes for g in schema.groups]


@pytest.mark.parametrize("text", ["not json", '{"groups": 3}', '{"groups": []}', '{"nothing": 1}',
                                  "[" * 100000 + "]" * 100000,  # too deep for Python's JSON reader
                                  # a string where a list belongs would be read letter by letter
                                  '{"groups": [{"name": "eyes", "classes": "rg"}]}',
                                  '{"groups": [{"name": "hair", "classes": ["red"], "multi": "false"}]}',
                                  '{"groups": [{"name": "hair", "classes": ["red"], "suffixes": "hair"}]}'])
def test_bad_schema_file_is_a_user_error_naming_it(tmp_path, text):
    (tmp_path / "schema.json").write_text(text)
    with pytest.raises(UserError, match="schema.json"):
        Schema.load(tmp_path)


@pytest.mark.parametrize("classes, needle", [
    (["red", "Red", "blue"], "class 'Red' and 'red', which read the same"),
    (["a b", "a_b"], "class 'a_b' and 'a b', which read the same"),
    (["red", " "], "class ' '; give every class a distinct, non-empty name"),
])
def test_classes_that_read_alike_are_refused(tmp_path, classes, needle):
    (tmp_path / "schema.json").write_text(json.dumps({"groups": [{"name": "hair", "classes": classes}]}))
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'schema.json'}: group 'hair' has {needle}")):
        Schema.load(tmp_path)


def test_a_schema_file_may_start_with_a_byte_order_mark(tmp_path):
    (tmp_path / "schema.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ANIME.to_dict()).encode())
    assert Schema.load(tmp_path) == ANIME


def test_group_lookup_of_unknown_attribute_lists_the_real_ones():
    with pytest.raises(UserError, match="hair, eye"):
        ANIME.group("skin")


# ---- parsing human tags --------------------------------------------------------------------------

def test_parse_blue_hair_red_eyes():
    v = ANIME.parse("blue hair red eyes")
    assert v.dtype == np.float32 and v.shape == (22,)
    assert np.flatnonzero(v).tolist() == [SEED_HAIR.index("blue"), 12 + SEED_EYE.index("red")] == [8, 20]


@pytest.mark.parametrize("text", ["Blue Hair, Red Eyes", "blue_hair red_eye", "red eyes blue hair"])
def test_parse_accepts_case_punctuation_singular_and_order(text):
    assert np.array_equal(ANIME.parse(text), ANIME.parse("blue hair red eyes"))


def test_parse_partial_with_require_all_false():
    v = ANIME.parse("aqua hair", require_all=False)
    assert np.flatnonzero(v).tolist() == [2] and v[12:].sum() == 0
    with pytest.raises(UserError, match="eye"):
        ANIME.parse("aqua hair")


def test_parse_multi_label_objects():
    assert np.flatnonzero(CLEVR.parse("gray cube")).tolist() == [0]
    assert np.flatnonzero(CLEVR.parse("gray cube, red sphere yellow cylinder")).tolist() == [0, 9, 23]


@pytest.mark.parametrize("text, group, valid", [("teal hair red eyes", "hair", SEED_HAIR),
                                                ("blue hair teal eyes", "eye", SEED_EYE)])
def test_unknown_colour_error_lists_valid_names(text, group, valid):
    with pytest.raises(UserError) as e:
        ANIME.parse(text)
    msg = str(e.value)
    assert "'teal'" in msg and f"{group} colour" in msg and ", ".join(valid) in msg


def test_unknown_word_and_unknown_object_list_valid_names():
    with pytest.raises(UserError, match="'spiky'.*orange, white"):
        ANIME.parse("spiky blue hair red eyes")
    with pytest.raises(UserError, match="'pink'.*gray cube, red cube"):
        CLEVR.parse("pink cube")
    with pytest.raises(UserError, match="valid hair colours: orange, white"):
        ANIME.class_index("hair", "teal")
    assert ANIME.class_index("eye", "blue") == 9


def test_colour_names_are_read_in_any_case():
    assert ANIME.class_index("eye", "Blue") == ANIME.class_index("eye", "BLUE") == 9
    assert np.array_equal(ANIME.parse("Blue Hair RED eyes"), ANIME.parse("blue hair red eyes"))
    shouting = Schema.from_dict({**CLEVR.to_dict(), "groups": [dict(g, classes=[c.upper() for c in g["classes"]])
                                                              for g in CLEVR.to_dict()["groups"]]}, "x")
    assert shouting.parse("red cube").sum() == 1  # classes stored in capitals are found too


def test_two_values_for_one_group_are_refused():
    with pytest.raises(UserError, match="two hair"):
        ANIME.parse("blue hair red hair red eyes")


# ---- describe inverts parse ----------------------------------------------------------------------

@pytest.mark.parametrize("h, e", ALL_PAIRS)
def test_describe_inverts_parse_for_every_anime_label(h, e):
    text = f"{SEED_HAIR[h]} hair {SEED_EYE[e]} eyes"
    assert ANIME.describe(ANIME.parse(text)) == text
    assert np.array_equal(ANIME.parse(ANIME.describe(label(h, e))), label(h, e))


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 23), min_size=1, max_size=6))
def test_describe_inverts_parse_for_multi_label_sets(objects):
    v = np.zeros(24, np.float32)
    v[sorted(objects)] = 1
    text = CLEVR.describe(v)
    assert text == " ".join(CLEVR_OBJECTS[i] for i in sorted(objects))
    assert np.array_equal(CLEVR.parse(text), v)


def test_class_names_with_underscores_and_commas_can_be_written():
    schema = multi_label_schema(["red_cube", "blue, sphere"])
    assert schema.parse("red_cube").tolist() == schema.parse("Red cube").tolist() == [1, 0]
    assert schema.parse("red cube, blue sphere").tolist() == [1, 1]
    assert np.array_equal(schema.parse(schema.describe(np.ones(2))), np.ones(2))


def test_a_class_two_groups_share_is_written_with_the_group_name():
    """README's schema.json: groups without suffixes, hair: red and eyes: red."""
    schema = Schema.from_dict({"groups": [{"name": "hair", "classes": ["red", "blue"]},
                                          {"name": "eyes", "classes": ["red", "green"]}]})
    assert schema.parse("red hair, green").tolist() == [1, 0, 0, 1]
    assert schema.parse("blue red eyes").tolist() == [0, 1, 1, 0]
    for vec in schema.combinations():
        assert np.array_equal(schema.parse(schema.describe(vec)), vec)
    with pytest.raises(UserError, match="'red' in 'red green' is a class of several groups; "
                                        "write 'red hair' or 'red eyes'"):
        schema.parse("red green")


# ---- checking stored labels ----------------------------------------------------------------------

def test_check_accepts_valid_and_refuses_malformed_labels():
    ANIME.check(label(3, 4), "x")
    CLEVR.check(np.zeros(24), "x")  # an empty scene is a valid multi-label vector
    with pytest.raises(UserError, match="21 numbers.*22 classes"):
        ANIME.check(np.zeros(21), "x")
    with pytest.raises(UserError, match="exactly one hair"):
        ANIME.check(label(3, 4) + label(5, 4) * np.r_[np.ones(12), np.zeros(10)], "x")
    with pytest.raises(UserError, match="exactly one eye"):
        ANIME.check(np.r_[np.eye(12)[0], np.zeros(10)], "x")
    with pytest.raises(UserError, match="0/1"):
        ANIME.check(label(3, 4) * 0.5, "x")


def test_combinations_are_every_hair_eye_pair_in_pair_order():
    combos = ANIME.combinations()
    assert len(combos) == 120
    assert all(np.array_equal(c, label(h, e)) for c, (h, e) in zip(combos, ALL_PAIRS))


# ---- encodings -----------------------------------------------------------------------------------

def batch():
    return torch.from_numpy(np.stack([label(h, e) for h, e in ALL_PAIRS]))


def test_onehot_encoding_is_the_22_dim_label():
    assert cond_dim(ANIME, "onehot") == 22
    assert torch.equal(encode(ANIME, batch(), "onehot"), batch())


def test_pair_encoding_is_one_of_120_at_hair_times_10_plus_eye():
    assert cond_dim(ANIME, "pair") == 120
    c = encode(ANIME, batch(), "pair")
    assert c.shape == (120, 120) and c.dtype == torch.float32
    assert torch.equal(c.sum(1), torch.ones(120))
    expected = torch.tensor([h * 10 + e for h, e in ALL_PAIRS])
    assert torch.equal(c.argmax(1), expected)


def test_rgb_encoding_is_the_two_colours_over_255():
    assert cond_dim(ANIME, "rgb") == 6
    c = encode(ANIME, batch(), "rgb")
    expected = torch.tensor([COLOR_RGB[SEED_HAIR[h]] + COLOR_RGB[SEED_EYE[e]] for h, e in ALL_PAIRS]) / 255.0
    assert c.shape == (120, 6)
    torch.testing.assert_close(c, expected)
    assert rgb_table(ANIME).shape == (22, 6)


@pytest.mark.parametrize("embed", ["onehot", "pair", "rgb"])
def test_the_training_encoder_matches_encode_and_builds_the_rgb_table_once(embed, monkeypatch):
    import anime_gan.labels as labels
    expected, built = encode(ANIME, batch(), embed), []
    real_table = labels.rgb_table
    monkeypatch.setattr(labels, "rgb_table", lambda schema: built.append(1) or real_table(schema))
    to_condition = labels.condition_encoder(ANIME, embed, "cpu")
    for _ in range(3):
        torch.testing.assert_close(to_condition(batch()), expected)
    assert len(built) == (1 if embed == "rgb" else 0)  # per step it would be a host->device copy


def test_multi_label_encodes_as_multi_hot_only():
    v = torch.from_numpy(np.stack([CLEVR.parse("gray cube red sphere"), CLEVR.parse("cyan cylinder")]))
    assert cond_dim(CLEVR, "onehot") == 24
    assert torch.equal(encode(CLEVR, v, "onehot"), v)
    assert v.sum(1).tolist() == [2, 1]
    for embed in ("pair", "rgb"):
        with pytest.raises(UserError, match="multi-label.*onehot"):
            cond_dim(CLEVR, embed)
        with pytest.raises(UserError, match="onehot"):
            encode(CLEVR, v, embed)


def test_unknown_embed_lists_the_choices():
    with pytest.raises(UserError, match="onehot, pair, rgb"):
        cond_dim(ANIME, "learned")
    with pytest.raises(UserError, match="onehot, pair, rgb"):
        encode(ANIME, batch(), "learned")


def test_parse_rgb():
    assert parse_rgb("#ff0000") == (1.0, 0.0, 0.0)
    assert parse_rgb("0, 255, 0") == (0.0, 1.0, 0.0)
    for bad in ("#ff00", "300,0,0", "red", "1,2", "#+f+f+f", "-0,1,2", "1_0,0,0", "#ff 000"):
        with pytest.raises(UserError, match="#rrggbb"):
            parse_rgb(bad)


def test_group_names_the_accuracy_report_uses_are_reserved():
    for name in ("joint", "k", "worst"):
        with pytest.raises(UserError, match=f"group name '{name}' is reserved"):
            Schema.from_dict({"groups": [{"name": name, "classes": ["a", "b"]}]}, "schema.json")
