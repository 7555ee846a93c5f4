"""PII replacement (FineWeb's last step): e-mails and public IPs become placeholders, deterministically."""

import pytest
from pydantic import ValidationError

from data.cleaning.pii import EMAIL_REPLACEMENTS, IP_REPLACEMENTS, IPV6_REPLACEMENTS, PII, PIIOptions, build_pii


def doc(text: str) -> dict:
    return {"id": "d", "url": "", "text": text, "source": "test", "meta": {"lang": "en"}}


def replaced(text: str, **options) -> str:
    return PII(**options).replace(text)[0]


def test_emails_become_one_of_the_example_addresses():
    out = replaced("Write to john.doe@gmail.com or to jane+news@mail.co.uk today.")
    assert "gmail" not in out and "mail.co.uk" not in out
    first, second = out.split(" or to ")
    assert first.removeprefix("Write to ") in EMAIL_REPLACEMENTS
    assert second.removesuffix(" today.") in EMAIL_REPLACEMENTS


def test_email_with_an_address_literal_is_replaced_whole():
    assert replaced("root@[8.8.8.8]") in EMAIL_REPLACEMENTS


@pytest.mark.parametrize("text", ["@decorator", "user@localhost", "a @ b.com", "@@ b.com"])
def test_things_that_are_not_email_addresses_stay(text):
    assert replaced(text) == text


def test_public_ipv4_is_replaced_private_and_special_ones_stay():
    text = "dns 8.8.8.8, lan 192.168.1.1, vpn 10.0.0.5, lo 127.0.0.1, any 0.0.0.0, link 169.254.1.1, cg 100.64.0.1"
    out = replaced(text)
    assert out.split(",")[0].removeprefix("dns ") in IP_REPLACEMENTS
    assert out.split(",", 1)[1] == text.split(",", 1)[1]


@pytest.mark.parametrize("text", ["Python 3.11.4", "version 1.2.3", "release 1.2.3.4.5", "build 2.7.18.1234",
                                  "256.1.1.1", "01.02.03.04", "v1.2.3"])
def test_version_numbers_are_not_addresses(text):
    assert replaced(text) == text


def test_ipv4_inside_urls_and_sentences_is_replaced():
    out = replaced("See http://93.184.216.34/index.html or ping 1.1.1.1.")
    assert "93.184.216.34" not in out and "1.1.1.1" not in out and out.endswith(".")


def test_public_ipv6_is_replaced_with_a_documentation_address():
    out = replaced("server 2001:4860:4860::8888 and 2a00:1450:4001:82a::200e.")
    assert out.split()[1] in IPV6_REPLACEMENTS
    assert out.split()[3].rstrip(".") in IPV6_REPLACEMENTS


@pytest.mark.parametrize("text", ["::1", "fe80::1", "fc00::1", "2001:db8::1", "std::map<int, int>", "a::b",
                                  "12:30:45", "2024:12:30", "dead::beef"])
def test_private_ipv6_and_lookalikes_stay(text):
    assert replaced(text) == text


def test_replacement_is_deterministic_and_depends_on_the_replaced_value():
    text = "Contact alice@example.net, bob@example.net, carol@example.net from 8.8.8.8 and 9.9.9.9."
    assert replaced(text) == replaced(text) == PII().apply(doc(text))["text"]
    many = " ".join(f"user{i}@corp.example.net" for i in range(20))
    assert set(replaced(many).split()) == set(EMAIL_REPLACEMENTS)  # both placeholders are used


def test_apply_counts_replacements_in_meta_and_on_the_step_without_touching_the_input():
    pii = PII()
    d = doc("mail x@y.org, x2@y.org from 8.8.8.8 or 2001:4860:4860::8888")
    out = pii.apply(d)
    assert out["meta"] == {"lang": "en", "pii": {"email": 2, "ipv4": 1, "ipv6": 1}}
    assert d["meta"] == {"lang": "en"} and "x@y.org" in d["text"]
    pii.apply(doc("again z@y.org"))
    assert pii.counts == {"email": 3, "ipv4": 1, "ipv6": 1}


def test_documents_without_pii_come_back_unchanged_and_nothing_is_ever_dropped():
    d = doc("Nothing to see at 127.0.0.1 here.")
    assert PII().apply(d) is d
    assert PII().reason(d) is None


def test_a_second_pass_changes_nothing():
    once = PII().apply(doc("a@b.com 8.8.8.8 2606:4700::1111"))
    assert PII().apply(once) is once


def test_each_kind_can_be_turned_off():
    text = "a@b.com 8.8.8.8 2606:4700::1111"
    assert replaced(text, emails=False).startswith("a@b.com ")
    assert " 8.8.8.8 " in replaced(text, ips=False)
    assert replaced(text, ipv6=False).endswith(" 2606:4700::1111")


def test_build_pii_from_config():
    assert isinstance(build_pii(True), PII) and build_pii(True).options == PIIOptions()
    assert build_pii(False) is None and build_pii(None) is None
    assert build_pii({"ips": False}).ips is False
    assert build_pii(PIIOptions(ipv6=False)).ipv6 is False
    with pytest.raises(ValidationError, match="phone_numbers"):
        build_pii({"phone_numbers": True})
    with pytest.raises(ValidationError, match="email_replacements"):
        build_pii({"email_replacements": "me@example.com"})
    with pytest.raises(ValidationError, match="ip_replacements"):
        PII(ip_replacements=[])


def test_the_defaults_live_in_the_options_model():
    assert PII().options == PIIOptions()
    assert (PII().email_replacements, PII().ip_replacements, PII().ipv6_replacements) == \
        (EMAIL_REPLACEMENTS, IP_REPLACEMENTS, IPV6_REPLACEMENTS)
    assert PII(PIIOptions(emails=False), ips=False).options == PIIOptions(emails=False, ips=False)
