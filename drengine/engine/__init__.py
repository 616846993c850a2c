"""Operations composed from the layers below: backup, restore, check, dump, listing."""
