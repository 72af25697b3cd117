"""The version this server reports: TGI's API level it reproduces, and the fingerprint OpenAI routes echo."""

VERSION = "3.3.6"
SYSTEM_FINGERPRINT = f"{VERSION}-native"
