"""Signed drill reports and the compliance report over a period."""
