"""The consent app: data subjects (pseudonymous), purposes, notices, the consent ledger, data subject requests, retention."""
