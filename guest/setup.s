# The real-mode part of the built-in guest's bzImage: the boot sector and the setup sector
# with the Linux setup header (Documentation/arch/x86/boot.rst, protocol 2.15).
#
# This code never runs under the VMM: a 64-bit boot loader reads the header, loads the
# protected-mode part at code32_start (0x100000) and enters it at code32_start + 0x200.
# If a real-mode loader ever jumps here, the guest halts.
#
# vmm/build.rs assembles this file, extracts the .setup section and patches the fields
# marked "build.rs" (they depend on the protected-mode part's size). Everything else is
# fixed here. The file is exactly two sectors: setup_sects = 1.

	.code16
	.section .setup, "ax"

	.globl	bootsect_start
bootsect_start:
	cli
1:	hlt
	jmp	1b
bootsect_msg:
	.ascii	"rvmm-guest: not a boot sector; load this bzImage with a Linux boot loader\0"

	.org	0x1f1
hdr:
setup_sects:		.byte	0		# build.rs: setup sectors after the boot sector
root_flags:		.word	0
syssize:		.long	0		# build.rs: protected-mode size in 16-byte units
ram_size:		.word	0
vid_mode:		.word	0xffff		# NORMAL_VGA
root_dev:		.word	0
boot_flag:		.word	0xaa55

	.org	0x200
jump:			.byte	0xeb, setup_code - header	# jmp short setup_code
header:			.ascii	"HdrS"
version:		.word	0x020f
realmode_swtch:		.long	0
start_sys_seg:		.word	0x1000		# obsolete
kernel_version:		.word	kernel_version_str - bootsect_start - 0x200
type_of_loader:		.byte	0
loadflags:		.byte	0x01		# LOADED_HIGH: protected-mode part at 0x100000
setup_move_size:	.word	0x8000
code32_start:		.long	0x100000	# where the protected-mode part is linked and loaded
ramdisk_image:		.long	0		# written by the boot loader
ramdisk_size:		.long	0		# written by the boot loader
bootsect_kludge:	.long	0
heap_end_ptr:		.word	0
ext_loader_ver:		.byte	0
ext_loader_type:	.byte	0
cmd_line_ptr:		.long	0		# written by the boot loader
initrd_addr_max:	.long	0x7fffffff	# the guest reads an initrd anywhere below 2 GiB
kernel_alignment:	.long	0x200000
relocatable_kernel:	.byte	0		# position-dependent: linked at 0x100000
min_alignment:		.byte	21
xloadflags:		.word	0x0001		# XLF_KERNEL_64: 64-bit entry at code32_start + 0x200
cmdline_size:		.long	2047		# longest command line, without the NUL
hardware_subarch:	.long	0		# X86_SUBARCH_PC
hardware_subarch_data:	.quad	0
payload_offset:		.long	0		# no compressed payload: the kernel is not compressed
payload_length:		.long	0
setup_data:		.quad	0
pref_address:		.quad	0x100000	# = code32_start (the kernel is not relocatable)
init_size:		.long	0		# build.rs: memory needed from code32_start, .bss included
handover_offset:	.long	0		# no EFI handover
kernel_info_offset:	.long	0		# build.rs: kernel_info within the protected-mode part
hdr_end:

	.org	0x26c				# the 2.15 header ends here: fail if it grew
setup_code:
	cli
1:	hlt
	jmp	1b

kernel_version_str:
	.asciz	"rvmm-guest (built-in test guest)"

	.org	0x400				# setup_sects = 1: two sectors in all
setup_end:
