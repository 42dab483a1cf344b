import pytest

import vas_jax
from vas_jax import VasError
from vas_jax.tokenizer import make_tokenizer


def test_tokenizer_round_trip(tmp_path):
    tok = make_tokenizer(["good", "bad", "movie"])
    tok.save_pretrained(str(tmp_path))
    back = vas_jax.load_tokenizer(tmp_path)
    ids = back("good movie")["input_ids"]
    assert ids == tok("good movie")["input_ids"]
    assert back.decode(ids) == "good movie"
    assert back.eos_token_id == 3 and back.pad_token_id == 0


def test_tokenizer_errors(tmp_path):
    with pytest.raises(VasError, match="does not exist"):
        vas_jax.load_tokenizer(tmp_path / "nope")
    with pytest.raises(VasError, match="has no tokenizer files"):
        vas_jax.load_tokenizer(tmp_path)


def test_tokenizer_mismatch_names_first_difference():
    a = make_tokenizer(["good", "bad", "movie"])
    vas_jax.check_same_tokenizer(a, make_tokenizer(["good", "bad", "movie"]))
    with pytest.raises(VasError, match="token 'bad' is id 5 in the base tokenizer but 6 in the value tokenizer"):
        vas_jax.check_same_tokenizer(a, make_tokenizer(["good", "movie", "bad"]))
    with pytest.raises(VasError, match="base tokenizer has 7 tokens, the value tokenizer 8"):
        vas_jax.check_same_tokenizer(a, make_tokenizer(["good", "bad", "movie", "film"]))
