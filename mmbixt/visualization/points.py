def part_segmentation_figure(): pass
