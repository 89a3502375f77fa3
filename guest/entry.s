# The built-in guest's assembly: the protected-mode part's head (the 32-bit stub, the image
# info block, kernel_info and the 64-bit entry at +0x200), the exception stubs, the AP
# trampoline and the memory functions the Rust code calls. Everything before `rust_main`
# runs here: the guest's own GDT, IDT and stack, and SSE, are set up before any compiled code.
#
# Linked at 0x100000 by guest.ld; position-dependent (absolute addresses are used freely).

	.set	BOOT_CS32, 0x08			# 32-bit code, used only by the AP trampoline
	.set	BOOT_CS, 0x10			# 64-bit code (Linux's __BOOT_CS)
	.set	BOOT_DS, 0x18			# data (Linux's __BOOT_DS)
	.set	TRAMPOLINE_BASE, 0x8000		# where the BSP copies the AP trampoline (SIPI vector 0x08)
	.set	BOOT_STACK_SIZE, 0x10000	# the BSP's stack
	.set	AP_STACK_SIZE, 0x4000		# one per AP
	.set	MAX_APS, 63			# APs the guest can start (64 CPUs with the BSP)

	.set	CR0_MP, 1 << 1
	.set	CR0_EM, 1 << 2
	.set	CR0_NE, 1 << 5
	.set	CR0_WP, 1 << 16
	.set	CR0_NW, 1 << 29
	.set	CR0_CD, 1 << 30
	.set	CR0_PG, 1 << 31
	.set	CR4_PAE, 1 << 5
	.set	CR4_OSFXSR, 1 << 9
	.set	CR4_OSXMMEXCPT, 1 << 10
	.set	MSR_EFER, 0xc0000080

# ---------------------------------------------------------------------------------------
# The head: offset 0 is code32_start, offset 0x200 the 64-bit entry.

	.section .head.text, "ax"
	.code32
	.globl	startup_32
startup_32:
	# The 32-bit boot protocol is not supported: halt.
	cli
1:	hlt
	jmp	1b

	# The image info block that vmm/build.rs reads from the flat binary (offset 0x10).
	.org	0x10
	.globl	guest_info
guest_info:
	.ascii	"RVMGUEST"
	.long	__guest_file_size		# bytes of the protected-mode part in the file
	.long	__guest_mem_size		# bytes it needs in memory, from 0x100000 (.bss, stacks)
	.long	startup_64 - startup_32		# the 64-bit entry's offset: 0x200
	.long	kernel_info - startup_32	# kernel_info's offset (setup header kernel_info_offset)

	# kernel_info (boot protocol 2.15): "LToP", size, size_total, setup_type_max.
	.org	0x40
kernel_info:
	.ascii	"LToP"
	.long	kernel_info_end - kernel_info
	.long	kernel_info_end - kernel_info
	.long	0				# setup_data is not read
kernel_info_end:

	.org	0x200
	.code64
	.globl	startup_64
startup_64:
	# Entry state (64-bit boot protocol): long mode, identity-mapped paging, the loader's
	# GDT, interrupts off, RSI = boot_params. Nothing of the loader's is trusted beyond it.
	cli
	cld
	lgdt	gdt_ptr(%rip)
	mov	$BOOT_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	xor	%eax, %eax
	mov	%eax, %fs
	mov	%eax, %gs
	lea	boot_stack_top(%rip), %rsp
	pushq	$BOOT_CS			# reload CS from the guest's GDT
	lea	1f(%rip), %rax
	pushq	%rax
	lretq
1:
	mov	%rsi, %r12			# boot_params, for rust_main

	# Zero .bss (the loader copies only the file; .bss is whatever RAM held).
	lea	__bss_start(%rip), %rdi
	lea	__bss_end(%rip), %rcx
	sub	%rdi, %rcx
	shr	$3, %rcx
	xor	%eax, %eax
	rep stosq

	call	setup_idt
	lidt	idt_ptr(%rip)
	call	enable_sse

	mov	%r12, %rdi
	call	rust_main			# never returns
	jmp	halt_forever

# ---------------------------------------------------------------------------------------

	.text

# Enables the FPU and SSE (the compiled code uses SSE registers): CR0.MP and NE set, EM
# clear; CR4.OSFXSR and OSXMMEXCPT; a clean x87 state. MXCSR keeps its reset value (0x1f80):
# `ldmxcsr` is not loaded here because PVM's KVM fails to emulate it (an internal error).
	.globl	enable_sse
enable_sse:
	mov	%cr0, %rax
	and	$~CR0_EM, %rax
	or	$(CR0_MP | CR0_NE), %rax
	mov	%rax, %cr0
	mov	%cr4, %rax
	or	$(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
	mov	%rax, %cr4
	fninit
	ret

# Fills the 256 IDT gates: interrupt gates, DPL 0, CS = BOOT_CS, stub n at isr_stubs + 16 n.
setup_idt:
	lea	isr_stubs(%rip), %rax
	lea	guest_idt(%rip), %rdi
	mov	$256, %ecx
1:	mov	%eax, %edx
	mov	%dx, (%rdi)			# offset 15:0
	movw	$BOOT_CS, 2(%rdi)		# selector
	movw	$0x8e00, 4(%rdi)		# IST 0; present, DPL 0, 64-bit interrupt gate
	shr	$16, %edx
	mov	%dx, 6(%rdi)			# offset 31:16
	mov	%rax, %rdx
	shr	$32, %rdx
	mov	%edx, 8(%rdi)			# offset 63:32
	movl	$0, 12(%rdi)
	add	$16, %rax
	add	$16, %rdi
	dec	%ecx
	jnz	1b
	ret

	.globl	halt_forever
halt_forever:
	cli
1:	hlt
	jmp	1b

# Exception and interrupt stubs: 16 bytes each, so that stub n is at isr_stubs + 16 n. Each
# pushes a zero where the CPU pushes no error code, then the vector, and jumps to isr_common.
# The jump is encoded by hand (e9 rel32) so that every stub has a fixed size.
	.altmacro
	.macro	ISR_STUB vec
0:
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq	$0
	.endif
	pushq	$\vec
	.byte	0xe9
	.long	isr_common - . - 4
	.fill	16 - (. - 0b), 1, 0xcc
	.endm

	.balign	16
isr_stubs:
	.set	vec, 0
	.rept	256
	ISR_STUB %vec
	.set	vec, vec + 1
	.endr
isr_stubs_end:
	.if (isr_stubs_end - isr_stubs) != 256 * 16
	.error	"ISR stubs are not 16 bytes each"
	.endif
	.noaltmacro

# Saves the general registers below the CPU's frame and calls guest_exception(frame), which
# prints the vector and the registers, signals pvpanic and halts. Nothing returns.
isr_common:
	cld
	push	%rax
	push	%rcx
	push	%rdx
	push	%rbx
	push	%rbp
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, %rdi
	and	$-16, %rsp
	call	guest_exception
	jmp	halt_forever

# An AP arrives here from the trampoline: 64-bit mode, the guest's GDT, paging with the BSP's
# CR3. It takes the next free AP stack (an atomic counter, so that an AP that is late can
# never share a stack with the next one), loads the IDT, enables SSE and calls ap_main(slot).
	.globl	ap_entry64
ap_entry64:
	mov	$BOOT_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	xor	%eax, %eax
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$1, %eax
	lock xadd %eax, AP_NEXT_SLOT(%rip)
	cmp	$MAX_APS, %eax
	jae	halt_forever			# no stack left for this AP
	mov	%eax, %r12d			# the slot (zero-extended)
	lea	1(%r12), %rax
	imul	$AP_STACK_SIZE, %rax, %rax
	lea	ap_stacks(%rip), %rsp
	add	%rax, %rsp			# top of stack slot
	lidt	idt_ptr(%rip)
	call	enable_sse
	mov	%r12d, %edi
	call	ap_main				# never returns
	jmp	halt_forever

# Loads an IDT with limit 0 and executes ud2: #UD cannot be delivered, nor #GP, nor #DF;
# the CPU shuts down (a triple fault). Used by workload=triple-fault.
	.globl	triple_fault
triple_fault:
	cli
	lidt	empty_idt_ptr(%rip)
	ud2
	jmp	halt_forever

# ---------------------------------------------------------------------------------------
# The memory functions compiled code calls (the host target's compiler_builtins does not
# provide them: on Linux they come from libc). DF is clear everywhere in the guest.

	.section .text.mem, "ax"
	.globl	memcpy, memmove, memset, memcmp, bcmp

memcpy:
	mov	%rdi, %rax
	mov	%rdx, %rcx
	rep movsb
	ret

memmove:
	mov	%rdi, %rax
	mov	%rdx, %rcx
	cmp	%rsi, %rdi
	jbe	1f				# destination below the source: copy forwards
	lea	-1(%rsi, %rdx), %rsi		# else backwards, from the last byte
	lea	-1(%rdi, %rdx), %rdi
	std
	rep movsb
	cld
	ret
1:	rep movsb
	ret

memset:
	mov	%rdi, %r9
	mov	%esi, %eax
	mov	%rdx, %rcx
	rep stosb
	mov	%r9, %rax
	ret

memcmp:
bcmp:
	xor	%eax, %eax
	xor	%ecx, %ecx
1:	cmp	%rdx, %rcx
	jae	2f
	movzbl	(%rdi, %rcx), %eax
	movzbl	(%rsi, %rcx), %r8d
	inc	%rcx
	sub	%r8d, %eax
	jz	1b
	ret
2:	xor	%eax, %eax
	ret

# ---------------------------------------------------------------------------------------
# The AP trampoline. The BSP copies [ap_trampoline_start, ap_trampoline_end) to
# TRAMPOLINE_BASE and sends INIT, SIPI (vector TRAMPOLINE_BASE >> 12). The AP starts in real
# mode at CS = 0x0800, IP = 0. Only offsets from ap_trampoline_start are used inside it; the
# absolute addresses it refers to (the GDT, AP_BOOT_CR3/EFER, ap_entry64) are in the image.

	.section .text.trampoline, "ax"
	.code16
	.globl	ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
	cli
	cld
	mov	%cs, %ax
	mov	%ax, %ds
	lgdtl	tramp_gdtr - ap_trampoline_start	# the guest's GDT (32-bit base)
	mov	%cr0, %eax
	and	$~(CR0_CD | CR0_NW), %eax		# caches on (INIT leaves CD and NW set)
	or	$1, %eax				# PE
	mov	%eax, %cr0
	ljmpl	$BOOT_CS32, $(TRAMPOLINE_BASE + tramp32 - ap_trampoline_start)

	.code32
tramp32:
	mov	$BOOT_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	AP_BOOT_CR3, %eax			# the BSP's page tables (below 4 GiB)
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	mov	AP_BOOT_EFER, %eax			# the BSP's EFER without LMA (LME, NXE, ...)
	xor	%edx, %edx
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_WP), %eax		# paging on: long mode becomes active
	mov	%eax, %cr0
	ljmp	$BOOT_CS, $ap_entry64			# into 64-bit code

	.balign	8
tramp_gdtr:
	.word	guest_gdt_end - guest_gdt - 1
	.long	guest_gdt
ap_trampoline_end:
	.code64

# ---------------------------------------------------------------------------------------

	.data
	.balign	16
	.globl	guest_gdt
guest_gdt:
	.quad	0
	.quad	0x00cf9a000000ffff		# 0x08: 32-bit code, 4 GiB flat (AP trampoline)
	.quad	0x00af9a000000ffff		# 0x10: 64-bit code
	.quad	0x00cf92000000ffff		# 0x18: data, 4 GiB flat
guest_gdt_end:

	.balign	8
	.word	0, 0, 0
gdt_ptr:
	.word	guest_gdt_end - guest_gdt - 1
	.quad	guest_gdt

	.word	0, 0, 0
idt_ptr:
	.word	256 * 16 - 1
	.quad	guest_idt

	.word	0, 0, 0
empty_idt_ptr:
	.word	0
	.quad	0

	.section .rodata
	.globl	ap_stack_count
ap_stack_count:
	.long	MAX_APS

	.bss
	.balign	4096
guest_idt:
	.space	256 * 16

# Stacks are not zeroed (a section of their own after .bss; see guest.ld).
	.section .stacks, "aw", @nobits
	.balign	4096
boot_stack:
	.space	BOOT_STACK_SIZE
boot_stack_top:
	.globl	ap_stacks
ap_stacks:
	.space	AP_STACK_SIZE * MAX_APS
