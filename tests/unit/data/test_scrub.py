"""PII / secret scrubbing: detector precision, placeholders, structure and report safety."""

from __future__ import annotations

import json
import os
import re

import pytest

from tunesmith.data.tools.pii_patterns import iban_checksum_ok, luhn_ok, shannon_entropy
from tunesmith.data.tools.scrub import scrub_file, scrub_text, scrub_value
from tunesmith.errors import DataError, TunesmithError


def kinds(text):
    return [f.kind for f in scrub_text(text)[1]]


def clean(text):
    return scrub_text(text)[0]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---- credit cards -------------------------------------------------------------------------

CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4012 8888 8888 1881",  # Visa
    "5555555555554444",
    "5105-1051-0510-5100",
    "2223 0031 2200 3222",  # Mastercard
    "378282246310005",
    "3782 822463 10005",
    "3714-496353-98431",
]  # Amex


@pytest.mark.parametrize("number", CARDS)
def test_valid_card_numbers_are_caught(number):
    assert clean(f"pay with {number}, thanks") == "pay with <CREDIT_CARD>, thanks"


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111112",
        "4111 1111 1111 1112",
        "5555-5555-5555-4445",
        "378282246310006",
        "3782 822463 10006",
        "1234567890123456",
    ],
)
def test_luhn_failing_digit_runs_are_left_alone(number):
    assert not luhn_ok(number.replace(" ", "").replace("-", ""))
    assert kinds(f"order {number} shipped") == []


def test_luhn_valid_run_without_card_prefix_or_with_odd_grouping_is_not_a_card():
    assert luhn_ok("0000000000000000")
    assert kinds("id 0000000000000000") == []
    assert kinds("4111-1111 1111-1111") == []  # mixed separators
    assert kinds("41111 11111 11111 1") == []  # not a card grouping


def test_card_inside_a_longer_digit_run_or_arithmetic_is_not_a_card():
    assert kinds("41111111111111110000") == []
    assert kinds("4220315081820346526") == []  # bare 19 digits: a big integer
    assert kinds("x = 2*4111111111111111 + 1") == []
    assert kinds("card: 4111111111111111") == ["CREDIT_CARD"]


# ---- e-mail -------------------------------------------------------------------------------

EMAILS = [
    "john.doe@example.com",
    "jane+newsletter@mail.example.co.uk",
    "a_b-c.d@sub.domain.org",
    "USER.NAME@EXAMPLE.COM",
    "x@y.io",
    "first.last+tag-1@dept.uni-example.edu",
    "o'neil@example.com"[2:],
    "user_99@host-name.example.travel",
]


@pytest.mark.parametrize("address", EMAILS)
@pytest.mark.parametrize(
    "template",
    ["{}", "mail {} now", "({})", "<{}>", "{}.", "{},", "{};", "{}!", "{}?", "'{}'", '"{}"', "to:{}", "[{}]"],
)
def test_no_email_is_missed(address, template):
    text = template.format(address)
    assert clean(text) == template.format("<EMAIL>")


@pytest.mark.parametrize(
    "text",
    [
        "@mention me",
        "a @ b",
        "ping @alice_99.",
        "user@localhost",
        "lodash@4.17.21",
        "npm i @types/node",
        "x@y",
        "@@",
        "me@",
        "price @ $5.00",
        "email at example dot com",
    ],
)
def test_text_with_at_signs_is_not_an_email(text):
    assert kinds(text) == []


# ---- IBAN ---------------------------------------------------------------------------------

IBANS = [
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "GB82 WEST 1234 5698 7654 32",
    "FR1420041010050500013M02606",
    "FR14 2004 1010 0505 0001 3M02 606",
    "GB33BUKB20201555555555",
]


@pytest.mark.parametrize("iban", IBANS)
def test_valid_ibans_are_caught(iban):
    assert iban_checksum_ok(iban.replace(" ", ""))
    assert clean(f"IBAN: {iban}.") == "IBAN: <IBAN>."


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013001",
        "DE88 3704 0044 0532 0130 00",
        "GB82WEST12345698765433",
        "FR1420041010050500013M02607",
        "DE8937040044053201300",
    ],
)  # also one character short
def test_checksum_failing_ibans_are_left_alone(iban):
    assert kinds(f"IBAN: {iban}") == []


# ---- SSN ----------------------------------------------------------------------------------


def test_valid_ssn_is_caught():
    assert clean("SSN 123-45-6789.") == "SSN <SSN>."


@pytest.mark.parametrize(
    "ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"]
)
def test_ssns_with_invalid_numbers_are_left_alone(ssn):
    assert kinds(f"SSN {ssn}") == []


def test_ssn_without_dashes_is_too_ambiguous():
    assert kinds("ref 123456789") == []


# ---- phones -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "+49 30 1234567",
        "+33 1 23 45 67 89",
        "(212) 555-0199",
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "020 7946 0958",
        "01 23 45 67 89",
        "+4915112345678",
    ],
)
def test_phone_numbers_are_caught(phone):
    assert clean(f"Call {phone} today") == "Call <PHONE> today"


def test_phone_after_a_phone_word_may_be_unformatted():
    assert clean("tel: 5551234567") == "tel: <PHONE>"
    assert clean("my mobile number is 0151 12345678.") == "my mobile number is <PHONE>."


@pytest.mark.parametrize(
    "text",
    [
        "released 2024-05-01",
        "on 01/05/2024",
        "at 10:30:45",
        "in 1999",
        "version 1.2.3",
        "v10.0.19045.2006",
        "order 123456789",
        "order #: 555-123-4567",
        "price $1,234.56",
        "1 234 567 EUR",
        "ISBN 978-3-16-148410-0",
        "call me on 2024-05-01",
        "call me at 5 pm",
        "+2 more",
        "+1.5 points",
        "between 2019-2023",
        "ticket 0123 456789",
        "5551234567",
    ],
)
def test_dates_versions_and_other_numbers_are_not_phones(text):
    assert kinds(text) == []


# ---- IP addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "192.168.1.10",
        "73.12.200.5",
        "10.0.0.1",
        "2001:db8::1",
        "fe80::1%eth0",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ],
)
def test_ip_addresses_are_caught(address):
    assert clean(f"host {address}, up") == "host <IP_ADDRESS>, up"


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "255.255.255.0",
        "v1.2.3.4",
        "1.2.3.4.5",
        "std::vector",
        "ABC::DEF",
        "rows[5::2]",
        "x[1::20]",
        "::ffff:127.0.0.1",
        "999.1.1.1",
        "01.02.03.04",
        "10:30:45",
        "00:1A:2B:3C:4D:5E",
        "| debian-policy | 4.6.2.0 |",
        "version 1.2.3.4",
        "pkg==1.2.3.4",
        "Python 3.11.4.1",
        "0.12.1.3",
        "section 5.2.1.1",
        "dpkg (1.16.4.3)",
        "10.20.30.40-2",
    ],
)
def test_non_addresses_and_loopback_are_left_alone(text):
    assert kinds(text) == []


# ---- secrets ------------------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c2xX9f3q\nQk8Z7w==\n-----END RSA PRIVATE KEY-----"
SECRETS = [
    "sk-abc123DEF456ghi789JKL012mno345PQR678stu901",
    "sk-proj-Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9n",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    JWT,
    "Xk9fQ2mZ7pLr4TbN8wYc3VdHq1Ws5Ea8Rd2Tf6Yg",  # high entropy, no known prefix
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCY1z2q3r4s5t",  # AWS-style secret access key
]


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_are_caught(secret):
    assert clean(f"key={secret} ok") == "key=<SECRET> ok"
    assert clean(f'use "{secret}".') == 'use "<SECRET>".'


def test_private_key_block_is_caught_whole():
    assert clean(f"here:\n{PEM}\nbye") == "here:\n<SECRET>\nbye"
    assert clean("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN") == "<SECRET>"  # truncated


@pytest.mark.parametrize(
    "text",
    [
        'api_key = "3f2a9c81d4e5b6a7c8d9e0f1a2b3c4d5"',
        "token=Xk9fQ2mZ7pLr4TbN8wYc",
        "Authorization: Bearer Zx8Kq2Lm9Rt4Vb7Nc1Qw",
        '{"password": "Tr0ub4dorXk9fQ2mZ"}',
    ],
)
def test_shorter_or_hex_values_after_a_secret_word_are_secrets(text):
    assert kinds(text) == ["SECRET"]
    assert clean(text).endswith(("<SECRET>", '<SECRET>"', '<SECRET>"}'))


def test_short_random_ids_without_context_are_kept():
    # Documented trade-off: under 32 characters a random-looking id is too often just an id.
    assert kinds("request Xk9fQ2mZ7pLr4TbN8wYc failed") == []


@pytest.mark.parametrize(
    "text",
    [
        "Wav2Vec2ForPreTraining",
        "Qwen/Qwen3-MoE-15B-A2B",
        "meta-hunyuan_v1_moe/HunYuanMoEV1-2-7b",
        "Nvf4TmaWarpSpecialized1SmSm100",
        "hipD3D10ResourceSetMapFlags",
        "github.com/org/repo/blob/94f5e16708329d2f2716426868ec89aa774af016/src/zoo/decoder",
        "TheBloke/recent-models-64f9a55bb3115b4f513ec026",
        "runs/May04_22-14-54_s-MacBook-Pro",
        "query, key = apply_rotary_pos_emb_2d(query)",
        "TransformerEncoderLayer12Norm",
        "getUserAccountByIdAndEmail2",
        "/home/User/Projects2/MyApp",
        "550e8400-e29b-41d4-a716-446655440000",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "sk-learn-contrib-imbalanced-learn",
        "Llama-3.1-8B-Instruct",
        "hf_hub_download",
        "internationalization",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        "task-abc123def456ghi789jkl",
    ],
)
def test_ordinary_words_ids_and_hashes_are_not_secrets(text):
    assert kinds(text) == []


def test_entropy():
    assert shannon_entropy("") == 0
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# ---- text and values ----------------------------------------------------------------------


def test_scrub_text_reports_offsets_in_the_original_and_keeps_the_rest():
    text = "mail a@b.com or call 555-123-4567"
    cleaned, findings = scrub_text(text)
    assert cleaned == "mail <EMAIL> or call <PHONE>"
    assert [(f.kind, f.start, f.length) for f in findings] == [("EMAIL", 5, 7), ("PHONE", 21, 12)]
    assert scrub_text("nothing here") == ("nothing here", [])


def test_scrub_value_walks_nested_strings_and_keeps_structure():
    row = {
        "messages": [
            {"role": "user", "content": "I am bob@example.com"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "pay", "arguments": '{"card": "4111 1111 1111 1111"}'},
                    }
                ],
            },
            {"role": "assistant", "content": "ok", "weight": 1},
        ],
        "meta": {"tags": ["x", "203.0.113.7"], "n": 3, "ok": True, "none": None, "f": 1.5},
        "card_as_number": 4111111111111111,
    }
    cleaned, findings = scrub_value(row)
    assert list(cleaned) == list(row)
    assert cleaned["messages"][0] == {"role": "user", "content": "I am <EMAIL>"}
    assert cleaned["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"card": "<CREDIT_CARD>"}'
    assert cleaned["messages"][2] == row["messages"][2]
    assert cleaned["meta"] == {"tags": ["x", "<IP_ADDRESS>"], "n": 3, "ok": True, "none": None, "f": 1.5}
    assert cleaned["card_as_number"] == "<CREDIT_CARD>"
    assert [(f.field, f.kind) for f in findings] == [
        ("messages[0].content", "EMAIL"),
        ("messages[1].tool_calls[0].function.arguments", "CREDIT_CARD"),
        ("meta.tags[1]", "IP_ADDRESS"),
        ("card_as_number", "CREDIT_CARD"),
    ]
    assert row["messages"][0]["content"] == "I am bob@example.com"  # input not mutated


# ---- files --------------------------------------------------------------------------------

ALL_SECRETS = SECRETS + [
    PEM,
    "bob.smith@example.com",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "+44 20 7946 0958",
    "192.168.1.10",
    "2001:db8::1",
]


def test_scrub_file_redacts_everything_and_the_report_never_repeats_a_secret(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"value: {s}"}, {"role": "assistant", "content": "noted"}]}
        for s in ALL_SECRETS
    ]
    rows.append({"text": "nothing to see"})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = scrub_file(source, tmp_path / "out.jsonl", tmp_path / "report.json")

    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == len(rows)
    assert out[-1] == rows[-1]
    assert report["rows"] == len(rows) and report["total"] == len(ALL_SECRETS)
    assert report["rows_with_findings"] == len(ALL_SECRETS)
    assert report["findings"][0] == {
        "line": 1,
        "field": "messages[0].content",
        "type": "SECRET",
        "length": len(SECRETS[0]),
    }
    assert report["by_type"]["SECRET"] == len(SECRETS) + 1
    assert report["by_line"]["1"] == 1
    saved = (tmp_path / "report.json").read_text()
    assert json.loads(saved) == report
    for secret in ALL_SECRETS:
        for start in range(len(secret) - 3):
            assert secret[start : start + 4] not in saved, secret
    for row in out[:-1]:  # each secret replaced whole, by one placeholder
        assert re.fullmatch(r"value: <[A-Z_]+>", row["messages"][0]["content"])


def test_report_has_no_secret_even_in_field_names(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"meta": {"alice@example.com": "x"}, "text": "hi"}])
    report = scrub_file(source, tmp_path / "out.jsonl")
    assert "alice" not in json.dumps(report)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {
        "meta": {"alice@example.com": "x"},
        "text": "hi",
    }  # keys are schema: kept


def test_structure_field_order_and_unicode_are_preserved(tmp_path):
    rows = [
        {"z": 1, "a": {"y": [1, 2.5, None, True], "b": "héllo ✓"}, "m": "x@y.io"},
        {"m": "", "a": [], "z": {}},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    scrub_file(source, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["z", "a", "m"] and list(first["a"]) == ["y", "b"]
    assert first == {**rows[0], "m": "<EMAIL>"}
    assert "héllo ✓" in lines[0]
    assert json.loads(lines[1]) == rows[1]


def test_line_numbers_count_blank_lines(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n\n{"text": "b@c.de"}\n')
    report = scrub_file(source, tmp_path / "out.jsonl")
    assert [f["line"] for f in report["findings"]] == [3]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_input_is_never_overwritten(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "a@b.com"}])
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    os.symlink(source, tmp_path / "link.jsonl")
    for out in [source, "in.jsonl", "sub/../in.jsonl", tmp_path / "link.jsonl"]:
        with pytest.raises(TunesmithError, match="input file"):
            scrub_file(source, out)
    os.link(source, tmp_path / "hard.jsonl")
    with pytest.raises(TunesmithError, match="input file"):
        scrub_file(source, tmp_path / "hard.jsonl")
    with pytest.raises(TunesmithError, match="input file"):
        scrub_file(source, tmp_path / "out.jsonl", report_path="in.jsonl")
    with pytest.raises(TunesmithError, match="another output"):
        scrub_file(source, tmp_path / "out.jsonl", report_path=tmp_path / "out.jsonl")
    assert source.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists()


def test_failed_scrub_leaves_no_partial_output(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a@b.com"}\n{broken\n')
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    with pytest.raises(DataError, match="line 2"):
        scrub_file(source, out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_missing_input_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        scrub_file(tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
