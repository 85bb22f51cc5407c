"""Stores behind small interfaces: each has an embedded and an AWS implementation."""
