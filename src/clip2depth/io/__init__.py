"""Files in and out: images, depth maps, videos, point clouds, colour maps; every write atomic."""
