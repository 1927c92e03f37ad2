"""Traces as people have them: parasim's, Vidur's, Azure's (2023/2024), BurstGPT's, mapped columns,
and hostile files. Expected arrivals are worked out by hand from the sample files' text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.serving.traces import parse_trace_columns, read_trace, trace_note

DATA = Path(__file__).parent / "data" / "traces"


def test_vidur_csv():
    w = read_trace(DATA / "vidur.csv")
    assert w.trace["format"] == "vidur"
    assert w.arrival_s.tolist() == [0.0, 0.25, 0.75, 1.5]
    assert w.prompt_tokens.tolist() == [512, 1024, 256, 2048] and w.output_tokens.tolist() == [64, 128, 32, 16]


def test_azure_2023_seven_fractional_digits():
    w = read_trace(DATA / "azure_2023.csv")
    assert w.trace["format"] == "azure" and w.trace["skipped"] == {"no_output_tokens": 1}
    # 18:15:46.6805900 is t = 0; 46.9105900 - 46.6805900 = 0.23; 48.0 - 46.68059 = 1.31941;
    # 49.1234567 - 46.6805900 = 2.4428667 (the 7th digit kept, not rounded to microseconds)
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.23, 1.31941, 2.4428667], abs=1e-9)
    assert w.prompt_tokens.tolist() == [1200, 300, 4000, 64]
    assert w.trace["origin"] == "2023-11-16 18:15:46.680590 UTC"


def test_azure_2024_zones_and_missing_fractions():
    w = read_trace(DATA / "azure_2024.csv")
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.041683, 0.157988, 1.5], abs=1e-9)
    assert w.output_tokens.tolist() == [4, 2, 41, 98]


def test_burstgpt_failures_are_skipped_and_counted():
    w = read_trace(DATA / "burstgpt.csv")
    assert w.trace["format"] == "burstgpt" and w.trace["skipped"] == {"no_output_tokens": 1}
    assert w.arrival_s.tolist() == [0.0, 0.0, 45.0, 124.0]  # seconds from the first request (7 s)
    assert w.prompt_tokens.tolist() == [530, 190, 1140, 388]  # equal times keep file order
    note = trace_note(w.trace)
    assert "skipped 1 row with 0 output tokens" in note and "7 s" in note


def test_mapped_columns_with_a_unit():
    cols = parse_trace_columns("arrival=sent_ms, prompt=INPUT_LEN, output=output_len, arrival_unit=ms")
    w = read_trace(DATA / "gateway_ms.csv", columns=cols)
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.25, 1.0])
    assert w.prompt_tokens.tolist() == [100, 200, 300] and w.trace["format"] == "custom"
    assert w.trace["columns"] == {"arrival": "sent_ms", "prompt": "input_len", "output": "output_len",
                                  "arrival_unit": "ms"}
    same = parse_trace_columns({"arrival": "sent_ms", "prompt": "INPUT_LEN", "output": "output_len",
                                "arrival_unit": "ms"})
    assert same == cols


def test_unknown_header_asks_for_a_mapping():
    with pytest.raises(InputError) as e:
        read_trace(DATA / "gateway_ms.csv")
    assert "gateway_ms.csv line 1" in e.value.field and "--trace-columns" in e.value.message
    assert "Timestamp" in e.value.message  # the known formats are listed


@pytest.mark.parametrize("spec, field", [
    ("arrival=sent_ms,prompt=input_len", "trace_columns.output"),
    ("arrival=sent_ms,prompt=input_len,output=output_len,unit=ms", "trace_columns.unit"),
    ("arrival=sent_ms,prompt=input_len,output=output_len,arrival_unit=hours", "trace_columns.arrival_unit"),
    ("sent_ms,input_len,output_len", "trace_columns"),
])
def test_bad_mappings(spec, field):
    with pytest.raises(InputError) as e:
        parse_trace_columns(spec)
    assert e.value.field == field


def test_mapped_column_missing_from_the_header():
    with pytest.raises(InputError) as e:
        read_trace(DATA / "gateway_ms.csv", columns=parse_trace_columns("arrival=t,prompt=input_len,output=output_len"))
    assert e.value.field == "trace_columns" and "'t'" in e.value.message and "sent_ms" in e.value.message


def test_limit_counts_kept_requests_in_file_order():
    w = read_trace(DATA / "burstgpt.csv", limit=3)
    assert w.prompt_tokens.tolist() == [530, 190, 1140]
    w = read_trace(DATA / "burstgpt.csv", limit=4)  # the failure on line 5 is skipped, not counted
    assert w.prompt_tokens.tolist() == [530, 190, 1140, 388]


def test_unsorted_rows_are_sorted_stably(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n3,30,1\n1,10,1\n3,31,1\n2,20,1\n")
    w = read_trace(path)
    assert w.arrival_s.tolist() == [0.0, 1.0, 2.0, 2.0] and w.prompt_tokens.tolist() == [10, 20, 30, 31]
    assert w.trace["sorted"] is False and "sorted by arrival" in trace_note(w.trace)


def test_parasim_format_is_read_as_written(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_s": 0.5, "prompt_tokens": 5, "output_tokens": 3}\n'
                    '{"arrival_s": 2, "prompt_tokens": 6, "output_tokens": 2, "prefix_id": 1, "prefix_tokens": 4}\n')
    w = read_trace(path)
    assert w.arrival_s.tolist() == [0.5, 2.0] and w.prefix_id.tolist() == [-1, 1] and w.prefix_tokens.tolist() == [0, 4]
    assert trace_note(w.trace) is None
    path.write_text('{"arrival_s": 0.5, "prompt_tokens": 5, "output_tokens": 0}\n')
    with pytest.raises(InputError, match="line 1"):
        read_trace(path)


def test_foreign_jsonl_is_recognised_from_its_keys(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"TIMESTAMP": "2024-05-12T00:00:01Z", "ContextTokens": 5, "GeneratedTokens": 3}\n'
                    '{"TIMESTAMP": "2024-05-12T02:00:01+02:00", "ContextTokens": 7, "GeneratedTokens": 2}\n')
    w = read_trace(path)  # 02:00:01+02:00 is 00:00:01 UTC: the same instant
    assert w.trace["format"] == "azure" and w.arrival_s.tolist() == [0.0, 0.0]


def test_context_is_checked_against_the_model(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Timestamp,Request tokens,Response tokens\n0,4000,96\n1,4000,97\n")
    assert len(read_trace(path, max_total_tokens=4097)) == 2
    with pytest.raises(InputError) as e:
        read_trace(path, max_total_tokens=4096, model_name="llama-2-7b")
    assert e.value.field == "t.csv line 3"  # 4000 + 96 = 4096 fits; 4000 + 97 does not
    assert "max_seq_len 4,096" in e.value.message and "llama-2-7b" in e.value.message


# --- hostile files: exit 2 naming the file and line, never a traceback ------------------------------

@pytest.mark.parametrize("cell", ["NaN", "nan", "inf", "-Infinity", "1e20", "-5", "1.5", "abc", "0x10", "1_000", "\u0663", "9" * 5000])
def test_hostile_csv_cells(tmp_path, cell):
    path = tmp_path / "t.csv"
    path.write_text(f"arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,{cell},5\n")
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert "t.csv line 3" in e.value.field


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e20", '"12"', "true", "12.5", "[12]", "null", "9" * 5000])
def test_hostile_json_values(tmp_path, value):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 3}\n'
                    f'{{"arrival_s": 1, "prompt_tokens": {value}, "output_tokens": 3}}\n')
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert "t.jsonl line 2" in e.value.field


def test_deeply_nested_json_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 3, "x": ' + "[" * 100_000
                    + "]" * 100_000 + "}\n")
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert "t.jsonl line 1" in e.value.field and "nested" in e.value.message


@pytest.mark.parametrize("payload, words", [
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n".encode("utf-16"), "UTF-16"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "not a text file"),
    (b"", "no requests"),
    (b"arrived_at,num_prefill_tokens,num_decode_tokens\n", "no requests"),
    (b"Timestamp,Request tokens,Response tokens\n1,5,0\n", "skipped 1 row with 0 output tokens"),
])
def test_unreadable_or_empty_files(tmp_path, payload, words):
    path = tmp_path / "t.csv"
    path.write_bytes(payload)
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert words in e.value.message


@pytest.mark.parametrize("rows, words", [
    ("2023-11-16 18:15:46,5,3\n12.5,5,3\n", "mixes date-times and numbers"),
    ("2023-13-45 18:15:46,5,3\n", "ISO-8601"),
    ("2023-11-16 25:15:46,5,3\n", "ISO-8601"),
    ("1e11,5,3\n", "past"),
    ("-1,5,3\n", ">= 0"),
    ("1,5\n", "missing field"),
])
def test_bad_arrivals_and_rows(tmp_path, rows, words):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert "t.csv line" in e.value.field and words in e.value.message


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8)), min_size=1, max_size=6))
def test_any_cells_give_a_workload_or_one_input_error(tmp_path_factory, rows):
    """Whatever the cells hold, reading gives a valid workload or an InputError naming the file."""
    path = tmp_path_factory.mktemp("t") / "t.csv"
    body = "".join(",".join(json.dumps(c) for c in row) + "\n" for row in rows)
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + body)
    try:
        w = read_trace(path)
    except InputError as e:
        assert e.field.startswith(("t.csv", "trace"))
        return
    assert w.arrival_s[0] == 0.0 and np.all(np.diff(w.arrival_s) >= 0)
    assert np.all(w.prompt_tokens >= 1) and np.all(w.output_tokens >= 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 10_000), st.integers(0, 5_000)), min_size=1, max_size=30))
def test_rebased_arrivals_keep_gaps_and_requests(tmp_path_factory, rows):
    """Rebasing shifts every arrival by the same amount, and the kept requests are exactly the rows
    with tokens on both sides."""
    path = tmp_path_factory.mktemp("t") / "t.csv"
    path.write_text("Timestamp,Request tokens,Response tokens\n" + "".join(f"{a!r},{p},{o}\n" for a, p, o in rows))
    kept = sorted(((a, p, o) for a, p, o in rows if p and o), key=lambda r: r[0])
    if not kept:
        with pytest.raises(InputError):
            read_trace(path)
        return
    w = read_trace(path)
    assert w.arrival_s.tolist() == pytest.approx([a - kept[0][0] for a, _, _ in kept], abs=1e-6)
    assert sorted(zip(w.prompt_tokens.tolist(), w.output_tokens.tolist())) == sorted((p, o) for _, p, o in kept)
    assert sum(w.trace["skipped"].values()) == len(rows) - len(kept)
