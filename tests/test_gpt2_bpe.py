from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID, decode, encode, get_gpt2_encoding


def test_hello_world_matches_gpt2():
    assert encode("Hello world") == [15496, 995]


def test_end_token_is_one_id_and_round_trips():
    ids = encode("Answer: Yes<|endoftext|>")
    assert ids[-1] == EOT_TOKEN_ID
    assert decode(ids) == "Answer: Yes<|endoftext|>"


def test_sep_is_outside_the_bpe_and_dropped_by_decode():
    assert get_gpt2_encoding().n_vocab == SEP_TOKEN_ID
    assert decode([SEP_TOKEN_ID, 15496]) == "Hello"
