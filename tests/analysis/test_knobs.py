"""Knobs in the result tables (analysis.knobs): the keys that pair runs."""

import json

import numpy as np
import pandas as pd

from analysis.knobs import merge_key, plain


def test_merge_key_is_each_values_json_text_and_holds_nulls_equal():
    column = pd.Series(["a", None, 0.5, "a", np.nan, 2], dtype=object)
    keys = merge_key(column).tolist()
    assert keys == [json.dumps(plain(v), default=str) for v in column]  # as written per row before
    assert keys[1] == keys[4] and keys[0] == keys[3] and len(set(keys)) == 4
