"""The Azurite emulator's well-known development account, which ``azurite://`` lock URLs use.

Here rather than beside the emulator fixture so that parsing a lock URL never imports the
test machinery.
"""

from __future__ import annotations

DEV_ACCOUNT = "devstoreaccount1"
# The emulator's published development key (not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def dev_connection_string(host: str, port: int) -> str:
    """The connection string of the development account on an emulator at ``host:port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{DEV_ACCOUNT};"
    )
