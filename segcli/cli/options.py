"""Option helpers shared by several commands (one place for each)."""

from __future__ import annotations

from segcli.sizes import parse_size

RUN_PRECISION_HELP = ("auto|float32|mixed_float16|mixed_bfloat16 to run the model under (auto: mixed_float16 "
                      "with a GPU, mixed_bfloat16 on a CPU with native bf16, else float32).")


def size_flag(text: str | None) -> list[int] | None:
    """--size HEIGHTxWIDTH as the [height, width] a recipe holds; None when the flag was not given."""
    size = parse_size(text)
    return None if size is None else list(size)


def overrides(**tables: dict) -> dict:
    """Recipe overrides holding only the flags given: {"train": {"epochs": "5"}}, {} when none. Numbers stay
    the flags' text: segcli.recipe checks every value (and names the flag) in one place."""
    given = {table: {key: value for key, value in values.items() if value is not None}
             for table, values in tables.items()}
    return {table: values for table, values in given.items() if values}
