"""The Graph API stand-in users run (`capi sandbox`) and the test suite uses."""

from capi_cli.sandbox.server import FAULT_KINDS, Fault, GraphStandin, RequestRecord, add_fails, parse_fail

__all__ = ["FAULT_KINDS", "Fault", "GraphStandin", "RequestRecord", "add_fails", "parse_fail"]
