"""Serving an exported model: image decoding, the prediction API and its web page."""
