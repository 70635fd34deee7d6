"""Depth for users' files: prediction over images and videos, point clouds, ONNX export."""
