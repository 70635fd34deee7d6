"""Depth for users' files: the plan (plan), its run (run), what is written (outputs), the point clouds' camera
(camera, pointcloud), ONNX export (export)."""
