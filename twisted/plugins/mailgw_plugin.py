"""twistd plugin entry for mailgw; kept tiny because every twistd run imports it."""

from twisted.application.service import ServiceMaker

mailgw = ServiceMaker(
    "mailgw",
    "mailgw.tap",
    "Secure mail gateway: IMAP4/IMAPS virtual servers, TLS SMTP relay, server publishing",
    "mailgw",
)
