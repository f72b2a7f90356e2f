"""Secondary captures: reformatted CT with planned screws and C2 isthmus slices burnt in."""
